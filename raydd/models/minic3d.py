"""MiniC3D, the paper's video network (Suppl. 11.1)."""

from __future__ import annotations

from torch import Tensor, nn

AVERAGE, DROPOUT_MAX = "average", "dropout-max"
HEADS = (AVERAGE, DROPOUT_MAX)


def _pool(kind: type[nn.Module], kernel: tuple[int, int, int], size: list[int]) -> nn.Module:
    """A pooling layer whose kernel shrinks to fit dimensions that are already small; updates ``size``."""
    fitted = tuple(min(k, s) for k, s in zip(kernel, size))
    size[:] = [s // k for s, k in zip(size, fitted)]
    return kind(fitted, stride=fitted)


class MiniC3D(nn.Module):
    """Three Conv3D blocks (3x7x7 kernels, stride 1x2x2, padding 1x3x3, ReLU), each followed by max
    pooling (1x2x2, then 2x2x2 twice), a 1x1x1 Conv3D classifier and global average pooling.

    Channel widths default to the official code's ``ConvNet3D`` (64, 128, 128; no normalisation): at
    50 classes this has 3,647,666 parameters, for any input size. Input (N, 3, T, H, W); output
    (N, num_classes). Pool kernels shrink where a dimension is already smaller (8x32x32 inputs).

    ``head="average"`` (raydd's): logits averaged over time and space. ``head="dropout-max"`` (the
    reference evaluation's ConvNet3D head): features averaged over 2 frames (stride 1) and over space,
    dropout 0.5, the 1x1x1 classifier per time step, then the max over time of the logits. Neither head
    has parameters of its own, so both share one parameter layout; :meth:`embed` does not use the head.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        channels: int = 3,
        frames: int = 16,
        height: int = 112,
        width: int = 112,
        widths: tuple[int, ...] = (64, 128, 128),
        head: str = AVERAGE,
    ) -> None:
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"MiniC3D head must be one of {HEADS}, got {head!r}")
        size = [frames, height, width]
        layers: list[nn.Module] = []
        in_channels = channels
        pools = ((1, 2, 2), (2, 2, 2), (2, 2, 2))
        for out_channels, pool in zip(widths, pools, strict=True):
            layers += [
                nn.Conv3d(in_channels, out_channels, (3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3)),
                nn.ReLU(inplace=True),
            ]
            size = [size[0], (size[1] + 1) // 2, (size[2] + 1) // 2]
            layers.append(_pool(nn.MaxPool3d, pool, size))
            in_channels = out_channels
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Conv3d(in_channels, num_classes, 1)
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.head = head
        if head == DROPOUT_MAX:
            self.time_pool = nn.AvgPool3d((min(2, size[0]), 1, 1), stride=1)
            self.dropout = nn.Dropout(0.5)

    def embed(self, videos_NCTHW: Tensor) -> Tensor:
        """(N, widths[-1]) globally pooled features (what FRePo regresses on)."""
        return self.pool(self.features(videos_NCTHW)).flatten(1)

    def feature_map(self, videos_NCTHW: Tensor) -> Tensor:
        """(N, widths[-1] x T' x H' x W') the flattened feature map before pooling (what DM matches, as the
        reference does): it keeps the space-time layout that motion lives in."""
        return self.features(videos_NCTHW).flatten(1)

    def forward(self, videos_NCTHW: Tensor) -> Tensor:
        features = self.features(videos_NCTHW)
        if self.head == AVERAGE:
            return self.pool(self.classifier(features)).flatten(1)
        per_time = self.time_pool(features).mean(dim=(3, 4), keepdim=True)  # (N, C, T', 1, 1)
        return self.classifier(self.dropout(per_time)).flatten(2).amax(dim=2)
