"""RetinaFace-MobileNet-0.25: strict pretrained load, output shapes, raw heads, anchors, params/MACs, registries."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from build.flops import count  # noqa: E402
from build.nets import retinaface as rf  # noqa: E402
from build.nets.retinaface import (  # noqa: E402
    RETINAFACE,
    DetectorConfig,
    RetinaFace,
    flatten_level,
    load_pretrained_retinaface,
    prior_boxes,
)


@pytest.fixture(scope="module")
def pretrained(asset: Callable[[str], Path]) -> RetinaFace:
    asset(rf.PRETRAINED_ASSET)  # skips with the reason when the registry is unreachable and nothing is cached
    return load_pretrained_retinaface()


def test_pretrained_loads_strict_with_biubug6_keys(pretrained: RetinaFace, asset: Callable[[str], Path]) -> None:
    state = torch.load(asset(rf.PRETRAINED_ASSET), map_location="cpu", weights_only=True)
    assert set(rf.strip_prefix(state)) == set(pretrained.state_dict())
    # strict load really copied the weights (not a fresh init)
    key = "ClassHead.0.conv1x1.weight"
    assert torch.equal(pretrained.state_dict()[key], rf.strip_prefix(state)[key])
    assert not pretrained.training


@pytest.mark.parametrize(("h", "w", "anchors"), [(640, 640, 16800), (384, 640, 10080)])
def test_output_shapes_and_softmax(pretrained: RetinaFace, h: int, w: int, anchors: int) -> None:
    x = torch.randn(1, 3, h, w) * 50
    with torch.no_grad():
        loc, conf, ldm = pretrained(x)
    assert loc.shape == (1, anchors, 4)
    assert conf.shape == (1, anchors, 2)
    assert ldm.shape == (1, anchors, 10)
    assert torch.allclose(conf.sum(-1), torch.ones(1, anchors), atol=1e-5)
    assert prior_boxes(h, w).shape == (anchors, 4)


def test_train_mode_returns_logits() -> None:
    model = RetinaFace(RETINAFACE).train()
    _, conf, _ = model(torch.randn(2, 3, 64, 96))
    assert conf.shape == (2, (8 * 12 + 4 * 6 + 2 * 3) * 2, 2)
    assert not torch.allclose(conf.sum(-1), torch.ones_like(conf[..., 0]))


def test_raw_heads_reassemble_to_forward(pretrained: RetinaFace) -> None:
    x = torch.randn(1, 3, 384, 640) * 50
    with torch.no_grad():
        heads = pretrained.head_outputs(x)
        loc, conf, ldm = pretrained(x)
    assert [tuple(h.cls.shape) for h in heads] == [(1, 4, 48, 80), (1, 4, 24, 40), (1, 4, 12, 20)]
    assert [tuple(h.box.shape[1:2]) for h in heads] == [(8,)] * 3
    assert [tuple(h.ldm.shape[1:2]) for h in heads] == [(20,)] * 3
    re_conf = torch.softmax(torch.cat([flatten_level(h.cls, 2) for h in heads], 1), -1)
    assert torch.equal(torch.cat([flatten_level(h.box, 4) for h in heads], 1), loc)
    assert torch.equal(torch.cat([flatten_level(h.ldm, 10) for h in heads], 1), ldm)
    assert torch.allclose(re_conf, conf, atol=1e-6)


def test_priors_match_the_biubug6_reference_port() -> None:
    box_utils = pytest.importorskip("build.reference.box_utils")
    ref = box_utils.PriorBox([[16, 32], [64, 128], [256, 512]], [8, 16, 32], False, (384, 640)).forward()
    assert torch.allclose(prior_boxes(384, 640), ref.reshape(-1, 4), atol=1e-6)
    # first anchor: centre of the first stride-8 cell, min_size 16
    assert prior_boxes(640, 640)[0].tolist() == pytest.approx([4 / 640, 4 / 640, 16 / 640, 16 / 640])


def test_params_and_macs_match_seed_004() -> None:
    c = count(RetinaFace(RETINAFACE), (640, 640))
    assert c.params == 426_608
    assert c.macs == pytest.approx(1.03e9, rel=0.01)
    assert c.conv_macs == 981_145_600  # conv-only MACs (bias free), exact for this architecture
    assert c.macs == c.conv_macs + c.norm_ops


def test_flops_uses_a_modules_own_macs_and_skips_its_children() -> None:
    class SelfCounting(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.inner(x)
            return out

        def macs(self, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> int:
            return 7 * output.numel()

    model = nn.Sequential(SelfCounting(), nn.Conv2d(4, 2, 1))
    c = count(model, (8, 8))
    assert c.conv_macs == 7 * 4 * 64 + 2 * 64 * 4
    assert c.params == 3 * 4 * 9 + 4 + 4 * 2 + 2


@pytest.fixture
def toy_attention() -> Iterator[str]:
    """An attention kind registered for the duration of one test (registries are module-global)."""
    name = "test_scale_attention"

    class Scale(nn.Module):
        def __init__(self, channels: int) -> None:
            super().__init__()
            self.gate = nn.Conv2d(channels, 1, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * torch.sigmoid(self.gate(x))

    rf.register(rf.ATTENTION_KINDS, name, lambda ch, cfg: Scale(ch))
    yield name
    del rf.ATTENTION_KINDS[name]


@pytest.mark.parametrize("where", ["fpn", "context"])
def test_config_rows_build_variants(toy_attention: str, where: str) -> None:
    cfg = DetectorConfig(name="test_variant", attention=toy_attention, attention_at=where)  # type: ignore[arg-type]
    model = RetinaFace(cfg).eval()
    keys = set(model.state_dict())
    assert {"att1.gate.weight", "att2.gate.weight", "att3.gate.weight"} <= keys
    assert set(RetinaFace(RETINAFACE).state_dict()) <= keys  # plain keys unchanged, attention added
    with torch.no_grad():
        loc, _, _ = model(torch.randn(1, 3, 64, 64))
    assert loc.shape == (1, (64 + 16 + 4) * 2, 4)
    assert count(model, (64, 64)).params == count(RetinaFace(RETINAFACE), (64, 64)).params + 3 * 65


def test_registry_errors_name_the_problem() -> None:
    with pytest.raises(KeyError, match="unknown context kind 'nope'"):
        RetinaFace(DetectorConfig(name="bad", context="nope"))
    with pytest.raises(KeyError, match="unknown conv kind 'nope'"):
        RetinaFace(DetectorConfig(name="bad", conv="nope"))
    with pytest.raises(ValueError, match="already registered"):
        rf.register(rf.FPN_KINDS, "fpn", rf.FPN_KINDS["fpn"])
    with pytest.raises(KeyError, match="unknown detector variant"):
        rf.get_config("does-not-exist")
