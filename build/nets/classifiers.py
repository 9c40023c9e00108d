"""The classifier architectures the trainer and the exporter know, by name (``--arch``).

Each entry says how to build the network for K classes, its default input size, where its linear head lives
(the keys ``--init`` drops when K differs), which modules are "the last blocks" of the staged unfreeze, and the
architecture string the exported manifest carries. Adding an architecture means adding one entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from build.nets.efficientnet import EfficientNetB0, efficientnet_b0
from build.nets.mobilenetv3 import MobileNetV3Small, mobilenet_v3_small

SIZE_MULTIPLE = 32  # both backbones downsample by 32; other sizes would lose border pixels unevenly


@dataclass(frozen=True)
class ClassifierArch:
    name: str
    default_size: int
    default_dropout: float
    head_prefix: str  # state_dict prefix of the K-way linear head
    feature_dim: int  # input width of that head
    build: Callable[[int, float], nn.Module]
    last_blocks: Callable[[nn.Module], list[nn.Module]]
    last_blocks_doc: str

    def describe(self) -> str:
        """The manifest's ``architecture`` string."""
        return f"{self.name} (torchvision layout), Linear({self.feature_dim}->K)"


def _mnv3_last(model: nn.Module) -> list[nn.Module]:
    assert isinstance(model, MobileNetV3Small)
    return [model.features[10], model.features[11], model.features[12]]


def _effnet_last(model: nn.Module) -> list[nn.Module]:
    assert isinstance(model, EfficientNetB0)
    return [model.features[5], model.features[6], model.features[7], model.features[8]]


ARCHS: dict[str, ClassifierArch] = {
    "mobilenet_v3_small": ClassifierArch(
        name="mobilenet_v3_small", default_size=160, default_dropout=0.2, head_prefix="classifier.3.",
        feature_dim=1024, build=lambda k, d: mobilenet_v3_small(k, dropout=d), last_blocks=_mnv3_last,
        last_blocks_doc="the last 2 bnecks (features.10, .11) + the 1x1 head conv (features.12)"),
    "efficientnet_b0": ClassifierArch(
        name="efficientnet_b0", default_size=224, default_dropout=0.2, head_prefix="classifier.1.",
        feature_dim=1280, build=lambda k, d: efficientnet_b0(k, dropout=d), last_blocks=_effnet_last,
        last_blocks_doc="the last 3 MBConv stages (features.5, .6, .7) + the 1x1 head conv (features.8)"),
}


def get_arch(name: str) -> ClassifierArch:
    if name not in ARCHS:
        raise ValueError(f"unknown classifier architecture {name!r}; known: {sorted(ARCHS)}")
    return ARCHS[name]


def arch_of(model: nn.Module) -> ClassifierArch:
    if isinstance(model, EfficientNetB0):
        return ARCHS["efficientnet_b0"]
    if isinstance(model, MobileNetV3Small):
        return ARCHS["mobilenet_v3_small"]
    raise TypeError(f"not a known classifier network: {type(model).__name__}")


def check_input_size(size: int) -> int:
    if size < SIZE_MULTIPLE or size % SIZE_MULTIPLE:
        raise ValueError(f"input size must be a positive multiple of {SIZE_MULTIPLE}, got {size}")
    return size


def build_classifier(arch: str, num_classes: int, dropout: float | None = None) -> nn.Module:
    spec = get_arch(arch)
    return spec.build(num_classes, spec.default_dropout if dropout is None else dropout)
