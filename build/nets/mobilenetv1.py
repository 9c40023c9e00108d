"""MobileNetV1 x0.25 backbone in the biubug6 Pytorch_Retinaface layout.

The module and attribute names (``stage1``/``stage2``/``stage3`` and the ``nn.Sequential`` indices inside)
equal the biubug6 state_dict keys under ``body.``, so the WIDER FACE-trained ``mobilenet0.25_Final.pth`` loads
with ``strict=True``. The ImageNet classifier (``avg``/``fc``) of the original is dropped: biubug6 wraps the
backbone in ``IntermediateLayerGetter`` and its checkpoints carry no ``fc`` keys.

Layer table (rows: kind, in, out, stride); the stage column says which output level a row belongs to.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


def conv_bn(inp: int, oup: int, stride: int = 1, leaky: float = 0.0) -> nn.Sequential:
    """3x3 conv (no bias) -> BN -> LeakyReLU. Keys: ``0`` conv, ``1`` bn."""
    return nn.Sequential(
        nn.Conv2d(inp, oup, 3, stride, 1, bias=False),
        nn.BatchNorm2d(oup),
        nn.LeakyReLU(negative_slope=leaky, inplace=True),
    )


def conv_bn_no_relu(inp: int, oup: int, stride: int = 1) -> nn.Sequential:
    """3x3 conv (no bias) -> BN."""
    return nn.Sequential(
        nn.Conv2d(inp, oup, 3, stride, 1, bias=False),
        nn.BatchNorm2d(oup),
    )


def conv_bn1x1(inp: int, oup: int, stride: int = 1, leaky: float = 0.0) -> nn.Sequential:
    """1x1 conv (no bias) -> BN -> LeakyReLU."""
    return nn.Sequential(
        nn.Conv2d(inp, oup, 1, stride, padding=0, bias=False),
        nn.BatchNorm2d(oup),
        nn.LeakyReLU(negative_slope=leaky, inplace=True),
    )


def conv_dw(inp: int, oup: int, stride: int, leaky: float = 0.1) -> nn.Sequential:
    """Depthwise 3x3 -> BN -> LeakyReLU -> pointwise 1x1 -> BN -> LeakyReLU (keys 0,1 and 3,4)."""
    return nn.Sequential(
        nn.Conv2d(inp, inp, 3, stride, 1, groups=inp, bias=False),
        nn.BatchNorm2d(inp),
        nn.LeakyReLU(negative_slope=leaky, inplace=True),
        nn.Conv2d(inp, oup, 1, 1, 0, bias=False),
        nn.BatchNorm2d(oup),
        nn.LeakyReLU(negative_slope=leaky, inplace=True),
    )


@dataclass(frozen=True)
class Row:
    kind: str  # "conv_bn" (full 3x3) or "conv_dw" (depthwise separable)
    inp: int
    out: int
    stride: int


# MobileNetV1 x0.25 as biubug6 defines it ("mobilenet0.25"). Output strides 8 / 16 / 32.
MOBILENETV1_025: dict[str, tuple[Row, ...]] = {
    "stage1": (
        Row("conv_bn", 3, 8, 2),
        Row("conv_dw", 8, 16, 1),
        Row("conv_dw", 16, 32, 2),
        Row("conv_dw", 32, 32, 1),
        Row("conv_dw", 32, 64, 2),
        Row("conv_dw", 64, 64, 1),
    ),
    "stage2": (
        Row("conv_dw", 64, 128, 2),
        *(Row("conv_dw", 128, 128, 1) for _ in range(5)),
    ),
    "stage3": (
        Row("conv_dw", 128, 256, 2),
        Row("conv_dw", 256, 256, 1),
    ),
}


def _make_stage(rows: tuple[Row, ...]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for r in rows:
        if r.kind == "conv_bn":
            layers.append(conv_bn(r.inp, r.out, r.stride, leaky=0.1))
        elif r.kind == "conv_dw":
            layers.append(conv_dw(r.inp, r.out, r.stride))
        else:
            raise ValueError(f"unknown MobileNetV1 row kind {r.kind!r} (expected 'conv_bn' or 'conv_dw')")
    return nn.Sequential(*layers)


class MobileNetV1(nn.Module):
    """Returns the stage1/stage2/stage3 feature maps (strides 8, 16, 32)."""

    def __init__(self, table: dict[str, tuple[Row, ...]] = MOBILENETV1_025) -> None:
        super().__init__()
        if set(table) != {"stage1", "stage2", "stage3"}:
            raise ValueError(f"MobileNetV1 table needs stage1, stage2, stage3; got {sorted(table)}")
        self.stage1 = _make_stage(table["stage1"])
        self.stage2 = _make_stage(table["stage2"])
        self.stage3 = _make_stage(table["stage3"])
        self.out_channels: tuple[int, int, int] = (
            table["stage1"][-1].out,
            table["stage2"][-1].out,
            table["stage3"][-1].out,
        )
        self.strides: tuple[int, int, int] = (8, 16, 32)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        c3 = self.stage1(x)
        c4 = self.stage2(c3)
        c5 = self.stage3(c4)
        return [c3, c4, c5]
