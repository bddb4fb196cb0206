"""The hallucinator H of static-dynamic distillation (Suppl. 11.3).

H turns a still image and a small dynamic memory into a video: the image is repeated over T frames,
the dynamic memory is upsampled (trilinear) to T x H x W, the two are joined on the channel axis and
one Conv3D block (or Conv3D + ConvTranspose3d with 8 middle channels) maps them to RGB frames. The
dynamic memory may have fewer frames, fewer channels and a lower resolution than the output video.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

VARIANTS = ("conv", "convtranspose")


class Hallucinator(nn.Module):
    """static (N, C, H, W) + dynamic (N, Cd, Td, Hd, Wd) -> video (N, C, T, H, W).

    ``variant="conv"``: one Conv3d(C + Cd -> C, 3x3x3, stride 1, padding 1), no activation (the
    reference H: 327 parameters for C=3, Cd=1). ``variant="convtranspose"``: Conv3d(C + Cd -> 8) ->
    ReLU -> ConvTranspose3d(8 -> C), both 3x3x3 with stride 1 and padding 1, so the output keeps the
    input size; the ReLU keeps the two layers from collapsing into one linear map.
    """

    def __init__(
        self,
        *,
        frames: int,
        channels: int = 3,
        dynamic_channels: int = 1,
        variant: str = "conv",
        middle_channels: int = 8,
    ) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"hallucinator variant must be one of {VARIANTS}, got {variant!r}")
        self.frames = frames
        joined = channels + dynamic_channels
        if variant == "conv":
            self.net: nn.Module = nn.Conv3d(joined, channels, 3, padding=1)
        else:
            self.net = nn.Sequential(
                nn.Conv3d(joined, middle_channels, 3, padding=1),
                nn.ReLU(inplace=True),
                nn.ConvTranspose3d(middle_channels, channels, 3, stride=1, padding=1),
            )

    def forward(self, static_NCHW: Tensor, dynamic_NCTHW: Tensor) -> Tensor:
        n, c, h, w = static_NCHW.shape
        if dynamic_NCTHW.shape[0] != n:
            raise ValueError(f"{n} static images but {dynamic_NCTHW.shape[0]} dynamic memories")
        target = (self.frames, h, w)
        if tuple(dynamic_NCTHW.shape[2:]) != target:
            dynamic_NCTHW = F.interpolate(dynamic_NCTHW, size=target, mode="trilinear", align_corners=False)
        static_video = static_NCHW.unsqueeze(2).expand(n, c, self.frames, h, w)
        return self.net(torch.cat([static_video, dynamic_NCTHW], dim=1))
