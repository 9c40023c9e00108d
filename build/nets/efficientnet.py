"""EfficientNet-B0 in plain torch, with torchvision's ``efficientnet_b0`` state_dict layout (seed 003's backbone).

PyPI torchvision cannot be imported beside this torch, so the network is rebuilt here from the same stage table
as torchvision's ``_efficientnet_conf("efficientnet_b0")`` (Tan & Le 2019, table 1). Keys and shapes match
torchvision exactly (``features.0`` stem .. ``features.1-7`` MBConv stages .. ``features.8`` 1x1 head conv,
``classifier.1`` the linear head), so a torchvision checkpoint loads with ``strict=True``; a timm
``efficientnet_b0`` checkpoint loads through :func:`timm_to_torchvision` (explicit key mapping; timm's
``efficientnet_b0`` has the same symmetric padding and BatchNorm eps, unlike ``tf_efficientnet_b0``, whose keys map
but whose TF "same" padding and eps 1e-3 this network does not reproduce). No checkpoint is shipped: none is
available from any registry this project uses.

Input N x 3 x S x S RGB, ImageNet-normalised (224 in seed 003; any multiple of 32 works); output N x K logits.
Parameters for 1000 classes: 5,288,548 (torchvision's documented figure).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
from torch import nn

from build.nets.blocks import ConvNormAct, SqueezeExcitation


@dataclass(frozen=True)
class StageRow:
    """One MBConv stage: torchvision's ``MBConvConfig`` at width/depth multiplier 1.0."""

    expand: int
    kernel: int
    stride: int
    in_ch: int
    out_ch: int
    repeats: int


# torchvision/models/efficientnet.py, _efficientnet_conf("efficientnet_b0"): expand, kernel, stride, in, out, n.
B0_STAGES: tuple[StageRow, ...] = (
    StageRow(1, 3, 1, 32, 16, 1),
    StageRow(6, 3, 2, 16, 24, 2),
    StageRow(6, 5, 2, 24, 40, 2),
    StageRow(6, 3, 2, 40, 80, 3),
    StageRow(6, 5, 1, 80, 112, 3),
    StageRow(6, 5, 2, 112, 192, 4),
    StageRow(6, 3, 1, 192, 320, 1),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280  # 4 x the last stage's 320
SE_RATIO = 0.25  # of the block's input channels
DEFAULT_INPUT_SIZE = 224
DEFAULT_DROPOUT = 0.2
DEFAULT_STOCHASTIC_DEPTH = 0.2
HEAD_PREFIX = "classifier.1."
TORCHVISION_B0_PARAMS = 5_288_548


def conv_bn_act(in_ch: int, out_ch: int, *, kernel: int = 1, stride: int = 1, groups: int = 1,
              act: bool = True) -> ConvNormAct:
    """Conv -> BatchNorm2d (torch defaults, as torchvision's B0) -> optional SiLU."""
    return ConvNormAct(in_ch, out_ch, kernel=kernel, stride=stride, groups=groups,
                       activation=nn.SiLU if act else None)


def stochastic_depth(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """torchvision's ``stochastic_depth(mode="row")``: drop whole samples with probability p, rescale the rest."""
    if not training or p == 0.0:
        return x
    keep = 1.0 - p
    mask = torch.empty((x.shape[0], 1, 1, 1), dtype=x.dtype, device=x.device).bernoulli_(keep)
    return x * mask.div_(keep)


class MBConv(nn.Module):
    """[expand 1x1] -> depthwise kxk -> SE -> project 1x1; residual (with stochastic depth) when shapes allow."""

    def __init__(self, expand: int, kernel: int, stride: int, in_ch: int, out_ch: int, *, drop_prob: float) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"MBConv stride must be 1 or 2, got {stride}")
        self.use_res_connect = stride == 1 and in_ch == out_ch
        expanded = in_ch * expand
        layers: list[nn.Module] = []
        if expanded != in_ch:
            layers.append(conv_bn_act(in_ch, expanded))
        layers.append(conv_bn_act(expanded, expanded, kernel=kernel, stride=stride, groups=expanded))
        layers.append(SqueezeExcitation(expanded, max(1, int(in_ch * SE_RATIO)), activation=nn.SiLU,
                                        scale_activation=nn.Sigmoid))
        layers.append(conv_bn_act(expanded, out_ch, act=False))
        self.block = nn.Sequential(*layers)
        self.drop_prob = drop_prob
        self.out_channels = out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.block(x)
        if self.use_res_connect:
            y = stochastic_depth(y, self.drop_prob, self.training) + x
        return y


class EfficientNetB0(nn.Module):
    """torchvision-compatible ``efficientnet_b0`` with a K-way head (``classifier.1 = Linear(1280, K)``)."""

    def __init__(self, num_classes: int, dropout: float = DEFAULT_DROPOUT,
                 stochastic_depth_prob: float = DEFAULT_STOCHASTIC_DEPTH,
                 stages: tuple[StageRow, ...] = B0_STAGES) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        layers: list[nn.Module] = [conv_bn_act(3, stages[0].in_ch, kernel=3, stride=2)]
        total = sum(r.repeats for r in stages)
        block_id = 0
        for row in stages:
            blocks: list[nn.Module] = []
            for i in range(row.repeats):
                # torchvision: the drop probability grows linearly with the block index over the whole network
                p = stochastic_depth_prob * block_id / total
                blocks.append(MBConv(row.expand, row.kernel, row.stride if i == 0 else 1,
                                     row.in_ch if i == 0 else row.out_ch, row.out_ch, drop_prob=p))
                block_id += 1
            layers.append(nn.Sequential(*blocks))
        head = 4 * stages[-1].out_ch
        layers.append(conv_bn_act(stages[-1].out_ch, head))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout, inplace=True), nn.Linear(head, num_classes))
        self.num_classes = num_classes
        self.head_channels = head
        self._init_weights()

    def _init_weights(self) -> None:
        """torchvision's initialisation: kaiming fan-out convs, unit BN, U(+-1/sqrt(K)) linear."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                r = 1.0 / math.sqrt(m.out_features)
                nn.init.uniform_(m.weight, -r, r)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled 1280-d features (before dropout and the linear head)."""
        return torch.flatten(self.avgpool(self.features(x)), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.classifier(self.forward_features(x))
        return out

    def replace_head(self, num_classes: int) -> None:
        head = nn.Linear(self.head_channels, num_classes)
        r = 1.0 / math.sqrt(num_classes)
        nn.init.uniform_(head.weight, -r, r)
        nn.init.zeros_(head.bias)
        self.classifier[1] = head
        self.num_classes = num_classes


def efficientnet_b0(num_classes: int, dropout: float = DEFAULT_DROPOUT,
                    stochastic_depth_prob: float = DEFAULT_STOCHASTIC_DEPTH) -> EfficientNetB0:
    return EfficientNetB0(num_classes=num_classes, dropout=dropout, stochastic_depth_prob=stochastic_depth_prob)


# ------------------------------------------------------------------------------------- timm key mapping
# timm block parts -> torchvision sub-module index inside ``block``: stage 0 (DepthwiseSeparableConv, no expand)
# and the later stages (InvertedResidual, with the 1x1 expand conv first).
_TIMM_DS = {"conv_dw": "0.0", "bn1": "0.1", "se.conv_reduce": "1.fc1", "se.conv_expand": "1.fc2",
            "conv_pw": "2.0", "bn2": "2.1"}
_TIMM_IR = {"conv_pw": "0.0", "bn1": "0.1", "conv_dw": "1.0", "bn2": "1.1", "se.conv_reduce": "2.fc1",
            "se.conv_expand": "2.fc2", "conv_pwl": "3.0", "bn3": "3.1"}
_TIMM_TOP = {"conv_stem": "features.0.0", "bn1": "features.0.1", "conv_head": "features.8.0",
             "bn2": "features.8.1", "classifier": "classifier.1"}
_TIMM_BLOCK = re.compile(r"^blocks\.(\d+)\.(\d+)\.(.+)\.(weight|bias|running_mean|running_var|num_batches_tracked)$")
_TIMM_TOP_KEY = re.compile(r"^(conv_stem|bn1|conv_head|bn2|classifier)\.(weight|bias|running_mean|running_var|"
                           r"num_batches_tracked)$")


class CheckpointLayoutError(ValueError):
    """A state_dict whose keys are neither torchvision's nor timm's efficientnet_b0 layout."""


def is_timm_layout(sd: dict[str, torch.Tensor]) -> bool:
    return "conv_stem.weight" in sd


def timm_to_torchvision(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a timm ``efficientnet_b0`` state_dict to torchvision's keys (tensors unchanged).

    timm ``blocks.{s}.{b}`` is torchvision ``features.{s+1}.{b}.block``; stage 0 has no expand conv. An unknown
    key raises :class:`CheckpointLayoutError` naming it (never silently dropped).
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        top = _TIMM_TOP_KEY.match(key)
        blk = _TIMM_BLOCK.match(key)
        if top:
            new = f"{_TIMM_TOP[top.group(1)]}.{top.group(2)}"
        elif blk:
            stage, idx, part, field = int(blk.group(1)), blk.group(2), blk.group(3), blk.group(4)
            table = _TIMM_DS if stage == 0 else _TIMM_IR
            if part not in table:
                raise CheckpointLayoutError(f"timm key {key!r}: unknown block part {part!r}")
            new = f"features.{stage + 1}.{idx}.block.{table[part]}.{field}"
        else:
            raise CheckpointLayoutError(f"key {key!r} is not part of timm's efficientnet_b0 layout")
        out[new] = value
    return out


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

