"""EfficientNet-B0: torchvision's state_dict keys/shapes (golden JSON), parameter count, timm key mapping,
stochastic depth, stage resolutions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from build.nets.efficientnet import (  # noqa: E402
    CheckpointLayoutError,
    count_params,
    efficientnet_b0,
    is_timm_layout,
    stochastic_depth,
    timm_to_torchvision,
)

GOLDEN = Path(__file__).resolve().parent / "data" / "efficientnet_b0_torchvision_keys.json"

# The published B0 table (Tan & Le 2019, table 1; torchvision _efficientnet_conf("efficientnet_b0")), written by
# hand: (expand, kernel, stride, out channels, repeats); stem 32, head 1280, SE squeeze = block input // 4.
HAND_STAGES = [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3),
               (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]


def _bn(prefix: str, ch: int) -> list[tuple[str, tuple[int, ...]]]:
    return [(f"{prefix}.weight", (ch,)), (f"{prefix}.bias", (ch,)), (f"{prefix}.running_mean", (ch,)),
            (f"{prefix}.running_var", (ch,)), (f"{prefix}.num_batches_tracked", ())]


def hand_torchvision_keys(k: int) -> list[tuple[str, tuple[int, ...]]]:
    """torchvision's efficientnet_b0 state_dict (key, shape) in order, derived from HAND_STAGES only."""
    out: list[tuple[str, tuple[int, ...]]] = [("features.0.0.weight", (32, 3, 3, 3)), *_bn("features.0.1", 32)]
    cin = 32
    for s, (e, ks, _stride, cout, n) in enumerate(HAND_STAGES, start=1):
        for b in range(n):
            p = f"features.{s}.{b}.block"
            exp, sq, j = cin * e, cin // 4, 0
            if e != 1:
                out += [(f"{p}.0.0.weight", (exp, cin, 1, 1)), *_bn(f"{p}.0.1", exp)]
                j = 1
            out += [(f"{p}.{j}.0.weight", (exp, 1, ks, ks)), *_bn(f"{p}.{j}.1", exp)]
            out += [(f"{p}.{j + 1}.fc1.weight", (sq, exp, 1, 1)), (f"{p}.{j + 1}.fc1.bias", (sq,)),
                    (f"{p}.{j + 1}.fc2.weight", (exp, sq, 1, 1)), (f"{p}.{j + 1}.fc2.bias", (exp,))]
            out += [(f"{p}.{j + 2}.0.weight", (cout, exp, 1, 1)), *_bn(f"{p}.{j + 2}.1", cout)]
            cin = cout
    out += [("features.8.0.weight", (1280, 320, 1, 1)), *_bn("features.8.1", 1280)]
    out += [("classifier.1.weight", (k, 1280)), ("classifier.1.bias", (k,))]
    return out


def hand_timm_keys(k: int) -> list[tuple[str, tuple[int, ...]]]:
    """timm's efficientnet_b0 names for the same tensors (conv_stem/bn1, blocks.s.b.*, conv_head/bn2, classifier)."""
    out: list[tuple[str, tuple[int, ...]]] = [("conv_stem.weight", (32, 3, 3, 3)), *_bn("bn1", 32)]
    cin = 32
    for s, (e, ks, _stride, cout, n) in enumerate(HAND_STAGES):
        for b in range(n):
            p = f"blocks.{s}.{b}"
            exp, sq = cin * e, cin // 4
            if e != 1:
                out += [(f"{p}.conv_pw.weight", (exp, cin, 1, 1)), *_bn(f"{p}.bn1", exp)]
            out += [(f"{p}.conv_dw.weight", (exp, 1, ks, ks)), *_bn(f"{p}.{'bn2' if e != 1 else 'bn1'}", exp)]
            out += [(f"{p}.se.conv_reduce.weight", (sq, exp, 1, 1)), (f"{p}.se.conv_reduce.bias", (sq,)),
                    (f"{p}.se.conv_expand.weight", (exp, sq, 1, 1)), (f"{p}.se.conv_expand.bias", (exp,))]
            if e != 1:
                out += [(f"{p}.conv_pwl.weight", (cout, exp, 1, 1)), *_bn(f"{p}.bn3", cout)]
            else:
                out += [(f"{p}.conv_pw.weight", (cout, exp, 1, 1)), *_bn(f"{p}.bn2", cout)]
            cin = cout
    out += [("conv_head.weight", (1280, 320, 1, 1)), *_bn("bn2", 1280)]
    out += [("classifier.weight", (k, 1280)), ("classifier.bias", (k,))]
    return out


def test_golden_keys_match_the_published_table_and_the_network() -> None:
    golden = [(k, tuple(s)) for k, s in json.loads(GOLDEN.read_text())]
    assert golden == hand_torchvision_keys(1000)
    got = [(k, tuple(t.shape)) for k, t in efficientnet_b0(1000).state_dict().items()]
    assert got == golden
    assert len(golden) == 360


def test_param_count_is_torchvisions() -> None:
    # torchvision documents 5,288,548 parameters for efficientnet_b0 (K=1000); the Linear(1280 -> 1000) head is
    # 1,281,000 of them, the backbone 4,007,548 (the literature's "5.3M").
    m = efficientnet_b0(1000)
    assert count_params(m) == 5_288_548
    assert count_params(m) - count_params(m.classifier[1]) == 4_007_548
    assert count_params(efficientnet_b0(2)) == 4_007_548 + 1280 * 2 + 2


def test_synthetic_torchvision_state_dict_loads_strictly() -> None:
    sd = {k: torch.full(s, 0.5) if s else torch.tensor(3) for k, s in hand_torchvision_keys(1000)}
    m = efficientnet_b0(1000)
    m.load_state_dict(sd, strict=True)
    assert torch.equal(m.features[6][3].block[2].fc1.weight, torch.full((48, 1152, 1, 1), 0.5))


def test_timm_mapping_covers_every_key_and_keeps_tensors() -> None:
    timm = {k: torch.randn(s) if s else torch.tensor(7) for k, s in hand_timm_keys(1000)}
    assert is_timm_layout(timm)
    mapped = timm_to_torchvision(timm)
    assert [(k, tuple(v.shape)) for k, v in mapped.items()] == hand_torchvision_keys(1000)
    assert mapped["features.1.0.block.0.0.weight"] is timm["blocks.0.0.conv_dw.weight"]
    assert mapped["features.2.1.block.3.1.running_var"] is timm["blocks.1.1.bn3.running_var"]
    assert mapped["classifier.1.weight"] is timm["classifier.weight"]
    efficientnet_b0(1000).load_state_dict(mapped, strict=True)
    with pytest.raises(CheckpointLayoutError, match=r"blocks\.0\.0\.conv_x\.weight"):
        timm_to_torchvision({"blocks.0.0.conv_x.weight": torch.zeros(1)})
    with pytest.raises(CheckpointLayoutError, match=r"head\.fc\.weight"):
        timm_to_torchvision({"head.fc.weight": torch.zeros(1)})


def test_output_shape_resolutions_and_any_k() -> None:
    m = efficientnet_b0(2).eval()
    x = torch.randn(2, 3, 224, 224)
    sizes = []
    h = x
    with torch.no_grad():
        for layer in m.features:
            h = layer(h)
            sizes.append(h.shape[-1])
        out = m(x)
    assert sizes == [112, 112, 56, 28, 14, 14, 7, 7, 7]
    assert h.shape[1] == 1280 and out.shape == (2, 2) and torch.isfinite(out).all()
    m.replace_head(5)
    assert m(torch.randn(1, 3, 64, 64)).shape == (1, 5)


def test_stochastic_depth_rows_and_eval_identity() -> None:
    torch.manual_seed(0)
    x = torch.ones(4000, 2, 1, 1)
    y = stochastic_depth(x, 0.25, training=True)
    kept = y[:, 0, 0, 0] > 0
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / 0.75))
    assert bool((y[~kept] == 0).all())
    assert 0.7 < kept.float().mean().item() < 0.8  # survival ~0.75
    assert torch.equal(stochastic_depth(x, 0.25, training=False), x)
    m = efficientnet_b0(3)
    probs = [blk.drop_prob for stage in list(m.features)[1:8] for blk in stage]
    assert probs[0] == 0.0 and probs[-1] == pytest.approx(0.2 * 15 / 16)  # linear in the block index
