"""MobileNetV3-Small in plain torch, with torchvision's ``mobilenet_v3_small`` state_dict layout.

PyPI torchvision cannot be imported beside this torch, so the network is rebuilt here from the same
config rows as torchvision's ``_mobilenet_v3_conf("mobilenet_v3_small")``. Keys and shapes match
torchvision exactly (``features.0`` .. ``features.12``, ``classifier.0`` / ``classifier.3``), so a
torchvision checkpoint loads with ``strict=True`` when one is available (none is shipped here).

Input is N x 3 x 160 x 160 RGB, ImageNet-normalised; the output is N x K logits. At 160 x 160 the feature
resolutions are 80 (stem) / 40 / 20 / 10 / 5 (seed 000's layer table).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from build.nets.blocks import ConvNormAct, SqueezeExcitation

Activation = Literal["RE", "HS"]


@dataclass(frozen=True)
class BneckRow:
    """One inverted-residual row: torchvision's ``InvertedResidualConfig`` (width multiplier 1.0)."""

    in_ch: int
    kernel: int
    expanded: int
    out_ch: int
    use_se: bool
    activation: Activation
    stride: int
    dilation: int = 1


# torchvision/models/mobilenetv3.py, _mobilenet_v3_conf("mobilenet_v3_small"), width_mult=1.0.
SMALL_ROWS: tuple[BneckRow, ...] = (
    BneckRow(16, 3, 16, 16, True, "RE", 2),
    BneckRow(16, 3, 72, 24, False, "RE", 2),
    BneckRow(24, 3, 88, 24, False, "RE", 1),
    BneckRow(24, 5, 96, 40, True, "HS", 2),
    BneckRow(40, 5, 240, 40, True, "HS", 1),
    BneckRow(40, 5, 240, 40, True, "HS", 1),
    BneckRow(40, 5, 120, 48, True, "HS", 1),
    BneckRow(48, 5, 144, 48, True, "HS", 1),
    BneckRow(48, 5, 288, 96, True, "HS", 2),
    BneckRow(96, 5, 576, 96, True, "HS", 1),
    BneckRow(96, 5, 576, 96, True, "HS", 1),
)
STEM_CHANNELS = 16
LAST_CONV_CHANNELS = 576  # 6 x the last row's out_ch
LAST_CHANNEL = 1024
INPUT_SIZE = 160

# The backbone feature index after which the spatial resolution is final for each stride (at 160 x 160):
# features.0 -> 80, features.1 -> 40, features.3 -> 20, features.8 -> 10, features.12 -> 5.
STAGE_ENDS: tuple[int, ...] = (0, 1, 3, 8, 12)


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """torchvision's ``_make_divisible``: round to a multiple of divisor, never dropping more than 10%."""
    min_value = divisor if min_value is None else min_value
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def _bn(ch: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(ch, eps=0.001, momentum=0.01)


def conv_bn_act(in_ch: int, out_ch: int, *, kernel: int = 3, stride: int = 1, groups: int = 1,
              dilation: int = 1, activation: type[nn.Module] | None = nn.ReLU) -> ConvNormAct:
    """Conv -> BatchNorm (eps 1e-3, momentum 0.01, as torchvision's MobileNetV3) -> optional activation."""
    return ConvNormAct(in_ch, out_ch, kernel=kernel, stride=stride, groups=groups, dilation=dilation, norm=_bn,
                       activation=activation)


class InvertedResidual(nn.Module):
    """MobileNetV3 bneck: [expand 1x1] -> depthwise kxk -> [SE] -> project 1x1, residual when shapes allow."""

    def __init__(self, row: BneckRow) -> None:
        super().__init__()
        if row.stride not in (1, 2):
            raise ValueError(f"bneck stride must be 1 or 2, got {row.stride}")
        act: type[nn.Module] = nn.Hardswish if row.activation == "HS" else nn.ReLU
        self.use_res_connect = row.stride == 1 and row.in_ch == row.out_ch
        layers: list[nn.Module] = []
        if row.expanded != row.in_ch:
            layers.append(conv_bn_act(row.in_ch, row.expanded, kernel=1, activation=act))
        stride = 1 if row.dilation > 1 else row.stride
        layers.append(conv_bn_act(row.expanded, row.expanded, kernel=row.kernel, stride=stride,
                                groups=row.expanded, dilation=row.dilation, activation=act))
        if row.use_se:
            layers.append(SqueezeExcitation(row.expanded, make_divisible(row.expanded // 4, 8)))
        layers.append(conv_bn_act(row.expanded, row.out_ch, kernel=1, activation=None))
        self.block = nn.Sequential(*layers)
        self.out_channels = row.out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.block(x)
        return y + x if self.use_res_connect else y


class MobileNetV3Small(nn.Module):
    """torchvision-compatible ``mobilenet_v3_small`` with a K-way head (``classifier.3 = Linear(1024, K)``)."""

    def __init__(self, num_classes: int, dropout: float = 0.2,
                 rows: tuple[BneckRow, ...] = SMALL_ROWS) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        layers: list[nn.Module] = [conv_bn_act(3, STEM_CHANNELS, kernel=3, stride=2, activation=nn.Hardswish)]
        layers += [InvertedResidual(r) for r in rows]
        last_conv = 6 * rows[-1].out_ch
        layers.append(conv_bn_act(rows[-1].out_ch, last_conv, kernel=1, activation=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(last_conv, LAST_CHANNEL),
            nn.Hardswish(inplace=True),
            nn.Dropout(p=dropout, inplace=True),
            nn.Linear(LAST_CHANNEL, num_classes),
        )
        self.num_classes = num_classes
        self._init_weights()

    def _init_weights(self) -> None:
        """torchvision's initialisation (kaiming fan-out convs, unit BN, N(0, 0.01) linears)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d | nn.GroupNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled 576-d features (before the classifier MLP)."""
        return torch.flatten(self.avgpool(self.features(x)), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.classifier(self.forward_features(x))
        return out

    def replace_head(self, num_classes: int) -> None:
        """Swap ``classifier.3`` for a fresh Linear(1024 -> num_classes) (seed 000's replacement point)."""
        head = nn.Linear(LAST_CHANNEL, num_classes)
        nn.init.normal_(head.weight, 0, 0.01)
        nn.init.zeros_(head.bias)
        self.classifier[3] = head
        self.num_classes = num_classes


def mobilenet_v3_small(num_classes: int, dropout: float = 0.2) -> MobileNetV3Small:
    return MobileNetV3Small(num_classes=num_classes, dropout=dropout)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
