"""ACWFace-style variants of RetinaFace-MobileNet-0.25 (seed 004): WFPN, SCM, EDAM and the deformable model.

Every variant is a row of :data:`VARIANTS` (a :class:`~build.nets.retinaface.DetectorConfig`); the new parts
are registered as *kinds* in the registries of :mod:`build.nets.retinaface`, which assembles them:

=============  =====================================================================================
kind           module
=============  =====================================================================================
fpn "wfpn"     :class:`WFPN` -- FPN whose top-down merges are weighted: ``a = sigmoid(conv1x1(Up(O_{i+1})))``
               with ONE output channel, ``out = merge(a * Up(O_{i+1}) + (1 - a) * O_i)`` (+65 params/merge)
context "scm"  :class:`SCM` -- SSH with four C/4 branches (3x3, 5x5, 7x7, 9x9 as chains of 3x3) fused by a
               3x3 conv-bn (instead of concatenation) and ReLU
context        :class:`SCM` whose fusion is a channel shuffle + grouped *deformable* 3x3 conv with a
"scm_dcn"      separable offset predictor (``fusion="dcn"``) -- the cost cut of "ours"
context        the same with a plain grouped 3x3 conv in the fusion (``fusion="grouped"``): the Hailo
"scm_grouped"  deploy variant (no DeformConv); weights load from "scm_dcn" with the offset predictor dropped
attention      :class:`EDAM` -- CBAM spatial attention + ECA-style channel attention (Conv1D, adaptive odd
"edam"         kernel ``|log2(C)/2 + 1/2|``); a sigmoid on each pooled branch, then a sigmoid of their sum
=============  =====================================================================================

Module attribute names inside SCM reuse the SSH names (``conv3X3``, ``conv5X5_1``, ...) so a pretrained
RetinaFace initialises every SCM conv whose shape matches (see :func:`init_from`).

Run ``python -m build.nets.acwface --table`` for params / MACs (thop convention, :mod:`build.flops`) of every
row next to the seed's figures.
"""

from __future__ import annotations

import argparse
import logging
import math

import torch
import torch.nn.functional as F
from torch import nn

from build.nets.retinaface import (
    ATTENTION_KINDS,
    CONTEXT_KINDS,
    FPN,
    FPN_KINDS,
    RETINAFACE,
    DetectorConfig,
    RetinaFace,
    conv3x3_bn,
    register,
    register_config,
)
from build.ops.deform_conv import DeformConv2d

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- WFPN


class WFPN(FPN):
    """FPN with learned per-pixel merge weights (one channel each, shared over channels)."""

    def __init__(self, in_channels: tuple[int, ...], out_channels: int, leaky: float = 0.1) -> None:
        super().__init__(in_channels, out_channels, leaky)
        self.weight1 = nn.Conv2d(out_channels, 1, kernel_size=1)  # for the merge into level 1 (stride 8)
        self.weight2 = nn.Conv2d(out_channels, 1, kernel_size=1)  # for the merge into level 2 (stride 16)

    @staticmethod
    def _weighted(low: torch.Tensor, up: torch.Tensor, weight: nn.Module) -> torch.Tensor:
        alpha = torch.sigmoid(weight(up))
        return alpha * up + (1.0 - alpha) * low

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        output1 = self.output1(feats[0])
        output2 = self.output2(feats[1])
        output3 = self.output3(feats[2])
        up3 = F.interpolate(output3, size=[output2.size(2), output2.size(3)], mode="nearest")
        output2 = self.merge2(self._weighted(output2, up3, self.weight2))
        up2 = F.interpolate(output2, size=[output1.size(2), output1.size(3)], mode="nearest")
        output1 = self.merge1(self._weighted(output1, up2, self.weight1))
        return [output1, output2, output3]


# ----------------------------------------------------------------------------------------------- SCM


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet channel shuffle: (N, g*k, H, W) -> interleave the g groups."""
    n, c, h, w = x.shape
    return x.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class SCM(nn.Module):
    """Context module: four C/4 branches (receptive fields 3/5/7/9), fused by a 3x3 conv-bn, then ReLU.

    ``fusion``: "dense" (plain 3x3, the ACWFace SCM), "dcn" (shuffle + grouped deformable 3x3 with a
    separable offset predictor), "grouped" (shuffle + the same grouped 3x3 without offsets: deploy form).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        leaky: float = 0.1,
        fusion: str = "dense",
        fusion_groups: int = 4,
    ) -> None:
        super().__init__()
        if out_channels % 4:
            raise ValueError(f"SCM out_channels must be a multiple of 4, got {out_channels}")
        q = out_channels // 4
        self.fusion_kind, self.fusion_groups = fusion, fusion_groups
        self.conv3X3 = conv3x3_bn("standard", in_channels, q, leaky=None)
        self.conv5X5_1 = conv3x3_bn("standard", in_channels, q, leaky=leaky)
        self.conv5X5_2 = conv3x3_bn("standard", q, q, leaky=None)
        self.conv7X7_2 = conv3x3_bn("standard", q, q, leaky=leaky)
        self.conv7x7_3 = conv3x3_bn("standard", q, q, leaky=None)
        self.conv9X9_3 = conv3x3_bn("standard", q, q, leaky=leaky)
        self.conv9x9_4 = conv3x3_bn("standard", q, q, leaky=None)
        conv: nn.Module
        if fusion == "dense":
            conv = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        elif fusion == "dcn":
            conv = DeformConv2d(out_channels, out_channels, 3, 1, 1, groups=fusion_groups, bias=False,
                                separable_offsets=True)
        elif fusion == "grouped":
            conv = nn.Conv2d(out_channels, out_channels, 3, 1, 1, groups=fusion_groups, bias=False)
        else:
            raise ValueError(f"unknown SCM fusion {fusion!r}: expected 'dense', 'dcn' or 'grouped'")
        self.fuse = nn.Sequential(conv, nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c3 = self.conv3X3(x)
        t5 = self.conv5X5_1(x)
        c5 = self.conv5X5_2(t5)
        t7 = self.conv7X7_2(t5)
        c7 = self.conv7x7_3(t7)
        c9 = self.conv9x9_4(self.conv9X9_3(t7))
        cat = torch.cat([c3, c5, c7, c9], dim=1)
        if self.fusion_kind != "dense":
            cat = channel_shuffle(cat, self.fusion_groups)  # each conv group sees every branch
        return F.relu(self.fuse(cat))


# ---------------------------------------------------------------------------------------------- EDAM


def eca_kernel_size(channels: int, gamma: int = 2, b: int = 1) -> int:
    """ECA-Net adaptive kernel size: t = int(|log2(C)/gamma + b/gamma|), made odd by adding 1 if even."""
    t = int(abs(math.log2(channels) / gamma + b / gamma))
    return t if t % 2 else t + 1


class EDAM(nn.Module):
    """Channel attention (avg/max pooled descriptors through a shared Conv1D, sigmoid on each, sigmoid of
    their sum) then CBAM spatial attention (7x7 conv over channel-avg/max maps, sigmoid)."""

    def __init__(self, channels: int, spatial_kernel: int = 7) -> None:
        super().__init__()
        k = eca_kernel_size(channels)
        self.channel_conv = nn.Conv1d(1, 1, k, padding=k // 2, bias=False)
        self.spatial_conv = nn.Conv2d(2, 1, spatial_kernel, padding=spatial_kernel // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        avg = x.mean(dim=(2, 3)).reshape(n, 1, c)
        mx = x.amax(dim=(2, 3)).reshape(n, 1, c)
        a = torch.sigmoid(self.channel_conv(avg))
        m = torch.sigmoid(self.channel_conv(mx))
        x = x * torch.sigmoid(a + m).reshape(n, c, 1, 1)
        s = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.spatial_conv(s))


# -------------------------------------------------------------------------------- registration + rows

register(FPN_KINDS, "wfpn", lambda chans, out, cfg: WFPN(chans, out, leaky=cfg.leaky))
register(CONTEXT_KINDS, "scm", lambda inp, out, cfg: SCM(inp, out, leaky=cfg.leaky, fusion="dense"))
register(CONTEXT_KINDS, "scm_dcn", lambda inp, out, cfg: SCM(inp, out, leaky=cfg.leaky, fusion="dcn"))
register(CONTEXT_KINDS, "scm_grouped", lambda inp, out, cfg: SCM(inp, out, leaky=cfg.leaky, fusion="grouped"))
register(ATTENTION_KINDS, "edam", lambda ch, cfg: EDAM(ch))

# (variant row, seed params, seed GFLOPs) -- seed 004's result table; the deploy row has no seed figure.
VARIANTS: dict[str, tuple[DetectorConfig, int | None, float | None]] = {
    "retinaface": (RETINAFACE, 426_608, 1.030),
    "wfpn": (register_config(DetectorConfig(name="retinaface_wfpn", fpn="wfpn")), 426_738, 1.030),
    "wfpn_scm": (register_config(DetectorConfig(name="retinaface_wfpn_scm", fpn="wfpn", context="scm")),
                 523_986, 1.304),
    "acwface": (register_config(DetectorConfig(name="acwface", fpn="wfpn", context="scm", attention="edam",
                                               attention_at="context")), 567_258, 1.427),
    "acwface_dcn": (register_config(DetectorConfig(name="acwface_dcn", fpn="wfpn", context="scm_dcn",
                                                   attention="edam", attention_at="context")), 478_167, 1.124),
    "acwface_deploy": (register_config(DetectorConfig(name="acwface_deploy", fpn="wfpn", context="scm_grouped",
                                                      attention="edam", attention_at="context")), None, None),
}


def build(variant: str) -> RetinaFace:
    """A fresh (randomly initialised) model of a :data:`VARIANTS` key or a registered config name."""
    key = next((k for k, v in VARIANTS.items() if variant in (k, v[0].name)), None)
    if key is None:
        raise KeyError(f"unknown ACWFace variant {variant!r}; known: {', '.join(VARIANTS)}")
    return RetinaFace(VARIANTS[key][0])


def init_from(student: nn.Module, source: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    """Copy every tensor of ``source`` whose key and shape match into ``student`` (params and buffers).

    Returns (copied keys, student keys left at their initialisation).
    """
    own = student.state_dict()
    copied = [k for k, v in source.items() if k in own and own[k].shape == v.shape]
    own.update({k: source[k] for k in copied})
    student.load_state_dict(own, strict=True)
    left = sorted(set(own) - set(copied))
    log.info("init_from: copied %d tensors, %d left at init", len(copied), len(left))
    return copied, left


def deploy_from_dcn(dcn: RetinaFace) -> RetinaFace:
    """The deploy model with every weight of ``dcn`` except the deformable offset predictors (dropped)."""
    deploy = RetinaFace(VARIANTS["acwface_deploy"][0])
    state = {k: v for k, v in dcn.state_dict().items() if ".offset_conv." not in k}
    missing, unexpected = deploy.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"deploy_from_dcn: missing {missing}, unexpected {unexpected}")
    return deploy




def table(size: tuple[int, int] = (640, 640)) -> str:
    from build.flops import count

    lines = [
        f"| variant | config name | params | MACs @{size[1]}x{size[0]} (G) | seed params | seed GFLOPs |",
        "|:-|:-|-:|-:|-:|-:|",
    ]
    for key, (cfg, seed_params, seed_g) in VARIANTS.items():
        c = count(RetinaFace(cfg), size)
        sp = f"{seed_params:,}" if seed_params else "-"
        sg = f"{seed_g:.3f}" if seed_g else "-"
        lines.append(f"| {key} | {cfg.name} | {c.params:,} | {c.macs / 1e9:.3f} | {sp} | {sg} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="ACWFace detector variants")
    parser.add_argument("--table", action="store_true", help="print params/MACs of every variant (Markdown)")
    parser.add_argument("--size", type=int, nargs=2, default=(640, 640), metavar=("H", "W"))
    args = parser.parse_args(argv)
    if args.table:
        print(table(tuple(args.size)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
