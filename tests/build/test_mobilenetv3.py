"""MobileNetV3-Small: torchvision's state_dict keys/shapes, parameter count, output and stage resolutions."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from build.nets.mobilenetv3 import STAGE_ENDS, count_params, mobilenet_v3_small  # noqa: E402

# Written by hand from torchvision/models/mobilenetv3.py (mobilenet_v3_small, width 1.0):
# (in, expanded, out, kernel, has_se, squeeze) per bneck; squeeze = _make_divisible(expanded // 4, 8).
HAND_ROWS = [
    (16, 16, 16, 3, True, 8),
    (16, 72, 24, 3, False, 0),
    (24, 88, 24, 3, False, 0),
    (24, 96, 40, 5, True, 24),
    (40, 240, 40, 5, True, 64),
    (40, 240, 40, 5, True, 64),
    (40, 120, 48, 5, True, 32),
    (48, 144, 48, 5, True, 40),
    (48, 288, 96, 5, True, 72),
    (96, 576, 96, 5, True, 144),
    (96, 576, 96, 5, True, 144),
]


def _bn(prefix: str, ch: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.weight": (ch,), f"{prefix}.bias": (ch,), f"{prefix}.running_mean": (ch,),
            f"{prefix}.running_var": (ch,), f"{prefix}.num_batches_tracked": ()}


def expected_state_dict_shapes(k: int) -> dict[str, tuple[int, ...]]:
    exp: dict[str, tuple[int, ...]] = {"features.0.0.weight": (16, 3, 3, 3), **_bn("features.0.1", 16)}
    for i, (cin, e, cout, ks, se, sq) in enumerate(HAND_ROWS, start=1):
        p = f"features.{i}.block"
        j = 0
        if e != cin:
            exp[f"{p}.{j}.0.weight"] = (e, cin, 1, 1)
            exp.update(_bn(f"{p}.{j}.1", e))
            j += 1
        exp[f"{p}.{j}.0.weight"] = (e, 1, ks, ks)
        exp.update(_bn(f"{p}.{j}.1", e))
        j += 1
        if se:
            exp[f"{p}.{j}.fc1.weight"] = (sq, e, 1, 1)
            exp[f"{p}.{j}.fc1.bias"] = (sq,)
            exp[f"{p}.{j}.fc2.weight"] = (e, sq, 1, 1)
            exp[f"{p}.{j}.fc2.bias"] = (e,)
            j += 1
        exp[f"{p}.{j}.0.weight"] = (cout, e, 1, 1)
        exp.update(_bn(f"{p}.{j}.1", cout))
    exp["features.12.0.weight"] = (576, 96, 1, 1)
    exp.update(_bn("features.12.1", 576))
    exp["classifier.0.weight"] = (1024, 576)
    exp["classifier.0.bias"] = (1024,)
    exp["classifier.3.weight"] = (k, 1024)
    exp["classifier.3.bias"] = (k,)
    return exp


@pytest.mark.parametrize("k", [1000, 7])
def test_state_dict_matches_torchvision_layout(k: int) -> None:
    got = {name: tuple(t.shape) for name, t in mobilenet_v3_small(k).state_dict().items()}
    want = expected_state_dict_shapes(k)
    assert set(got) == set(want), (sorted(set(got) - set(want)), sorted(set(want) - set(got)))
    assert got == want


def test_param_count_is_torchvisions() -> None:
    # torchvision documents 2,542,856 parameters for mobilenet_v3_small (K=1000); without the final
    # Linear(1024 -> 1000) (1,025,000 params) that is 1,517,856.
    m = mobilenet_v3_small(1000)
    assert count_params(m) == 2_542_856
    assert count_params(m) - count_params(m.classifier[3]) == 1_517_856


def test_output_shape_and_stage_resolutions() -> None:
    m = mobilenet_v3_small(7).eval()
    x = torch.randn(2, 3, 160, 160)
    sizes = []
    h = x
    with torch.no_grad():
        for i, layer in enumerate(m.features):
            h = layer(h)
            if i in STAGE_ENDS:
                sizes.append(h.shape[-1])
        out = m(x)
    assert sizes == [80, 40, 20, 10, 5]
    assert h.shape[1] == 576
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


def test_replace_head() -> None:
    m = mobilenet_v3_small(1000)
    m.replace_head(5)
    assert m(torch.randn(1, 3, 160, 160)).shape == (1, 5)
