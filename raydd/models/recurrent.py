"""CNN+GRU and CNN+LSTM (Suppl. 11.1): a per-frame 2D CNN, a single-layer recurrent net, a linear classifier."""

from __future__ import annotations

from torch import Tensor, nn


class RecurrentVideoNet(nn.Module):
    """Per frame: three [3x3 conv (stride 1, padding 1) -> instance norm -> ReLU -> 2x2 average pool]
    blocks, flattened (C x H/8 x W/8). Over time: one GRU or LSTM layer; the last hidden state goes to
    a linear classifier.

    The paper gives widths only in a figure and names no normalisation; raydd uses 32, 64, 64
    channels, a 128-wide recurrent state (fields: ``widths``, ``hidden``) and instance norm (as the
    image ConvNet). The frame features keep their spatial layout: a global average over space would
    make a translating object look the same in every frame, hiding exactly the motion the recurrent
    net is there to see. Input (N, 3, T, H, W); output (N, num_classes).
    """

    def __init__(
        self,
        *,
        num_classes: int,
        cell: str,
        channels: int = 3,
        height: int = 112,
        width: int = 112,
        widths: tuple[int, ...] = (32, 64, 64),
        hidden: int = 128,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = channels
        for out_channels in widths:
            layers += [
                nn.Conv2d(in_channels, out_channels, 3, padding=1),
                nn.GroupNorm(out_channels, out_channels),
                nn.ReLU(inplace=True),
            ]
            if height > 1 and width > 1:
                layers.append(nn.AvgPool2d(2))
                height, width = height // 2, width // 2
            in_channels = out_channels
        self.frame_features = nn.Sequential(*layers, nn.Flatten())
        recurrent = {"gru": nn.GRU, "lstm": nn.LSTM}[cell]
        self.recurrent = recurrent(in_channels * height * width, hidden, num_layers=1, batch_first=True)
        self.classifier = nn.Linear(hidden, num_classes)

    def embed(self, videos_NCTHW: Tensor) -> Tensor:
        """(N, hidden) last hidden state."""
        n, c, t, h, w = videos_NCTHW.shape
        frames = videos_NCTHW.transpose(1, 2).reshape(n * t, c, h, w)
        sequence = self.frame_features(frames).reshape(n, t, -1)
        outputs, _ = self.recurrent(sequence)
        return outputs[:, -1]

    def forward(self, videos_NCTHW: Tensor) -> Tensor:
        return self.classifier(self.embed(videos_NCTHW))
