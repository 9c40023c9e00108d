"""Building blocks shared by the torchvision-layout classifiers (MobileNetV3-Small, EfficientNet-B0).

Module and attribute names follow torchvision (``Conv2dNormActivation`` as a Sequential of conv / norm / act,
``SqueezeExcitation`` with ``fc1``/``fc2``), so the state_dict keys of the networks built from them match.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

NormFactory = Callable[[int], nn.Module]


class ConvNormAct(nn.Sequential):
    """Conv2d (no bias, "same" padding) -> norm -> optional activation (torchvision ``Conv2dNormActivation``)."""

    def __init__(self, in_ch: int, out_ch: int, *, kernel: int, stride: int = 1, groups: int = 1,
                 dilation: int = 1, norm: NormFactory = nn.BatchNorm2d,
                 activation: type[nn.Module] | None = nn.ReLU) -> None:
        padding = (kernel - 1) // 2 * dilation
        layers: list[nn.Module] = [
            nn.Conv2d(in_ch, out_ch, kernel, stride, padding, dilation=dilation, groups=groups, bias=False),
            norm(out_ch),
        ]
        if activation is not None:
            layers.append(activation(inplace=True))
        super().__init__(*layers)


class SqueezeExcitation(nn.Module):
    """Channel attention: avgpool -> fc1 (1x1) -> activation -> fc2 (1x1) -> scale activation -> scale."""

    def __init__(self, channels: int, squeeze: int, *, activation: type[nn.Module] = nn.ReLU,
                 scale_activation: type[nn.Module] = nn.Hardsigmoid) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.activation = activation()
        self.scale_activation = scale_activation()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s: torch.Tensor = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return x * s
