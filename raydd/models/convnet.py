"""The image ConvNet of DM / MTT / FRePo (stage 1 of static-dynamic distillation, on single frames)."""

from __future__ import annotations

from torch import Tensor, nn


class ConvNet(nn.Module):
    """``depth`` x [3x3 conv (``width`` channels) -> instance norm -> ReLU -> 2x2 average pool] -> linear.

    Input (N, C, H, W); output (N, num_classes). Instance norm is GroupNorm with one group per
    channel (affine), as in the reference image-distillation code. Pooling stops once a side reaches
    1 pixel, so small inputs work.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        channels: int = 3,
        height: int = 32,
        width: int = 32,
        depth: int = 3,
        net_width: int = 128,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = channels
        for _ in range(depth):
            layers += [
                nn.Conv2d(in_channels, net_width, 3, padding=1),
                nn.GroupNorm(net_width, net_width, affine=True),
                nn.ReLU(inplace=True),
            ]
            if height > 1 and width > 1:
                layers.append(nn.AvgPool2d(2))
                height, width = height // 2, width // 2
            in_channels = net_width
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(net_width * height * width, num_classes)
        self.feature_dim = net_width * height * width

    def embed(self, images_NCHW: Tensor) -> Tensor:
        """(N, feature_dim) features before the classifier (what DM matches)."""
        return self.features(images_NCHW).flatten(1)

    def feature_map(self, images_NCHW: Tensor) -> Tensor:
        """The same flattened feature map as :meth:`embed` (the interface DM shares with MiniC3D)."""
        return self.embed(images_NCHW)

    def forward(self, images_NCHW: Tensor) -> Tensor:
        return self.classifier(self.embed(images_NCHW))
