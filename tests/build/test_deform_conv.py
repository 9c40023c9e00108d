"""The deformable conv op: exactness vs plain conv, gradients vs finite differences, ONNX DeformConv parity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from build.ops.deform_conv import DeformConv2d, deform_conv2d, deform_conv2d_reference


def _rand_inputs(  # noqa: PLR0917
    n: int, c_in: int, c_out: int, hw: tuple[int, int], stride: int, og: int, groups: int = 1
) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(7)
    h, w = hw
    oh, ow = (h + 2 - 3) // stride + 1, (w + 2 - 3) // stride + 1
    x = torch.randn(n, c_in, h, w, dtype=torch.float64, generator=g)
    weight = torch.randn(c_out, c_in // groups, 3, 3, dtype=torch.float64, generator=g)
    # Non-integer offsets (bilinear sampling is not differentiable exactly on the pixel grid).
    offset = 1.7 * torch.rand(n, og * 18, oh, ow, dtype=torch.float64, generator=g) - 0.85 + 0.013
    mask = torch.rand(n, og * 9, oh, ow, dtype=torch.float64, generator=g)
    bias = torch.randn(c_out, dtype=torch.float64, generator=g)
    return x, weight, offset, mask, bias


@pytest.mark.parametrize(("stride", "groups"), [(1, 1), (2, 2)])
def test_zero_offsets_equal_conv2d(stride: int, groups: int) -> None:
    x, weight, offset, _, bias = _rand_inputs(2, 4, 6, (9, 7), stride, og=2, groups=groups)
    out = deform_conv2d(x, weight, torch.zeros_like(offset), None, bias, stride, 1, 1, groups, 2)
    ref = F.conv2d(x, weight, bias, stride, 1, 1, groups)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)


def test_fresh_module_equals_its_plain_conv() -> None:
    torch.manual_seed(0)
    m = DeformConv2d(8, 16, 3, stride=2, padding=1, modulated=True)
    x = torch.randn(1, 8, 12, 10)
    torch.testing.assert_close(m(x), F.conv2d(x, m.weight, m.bias, 2, 1), rtol=1e-5, atol=1e-5)


def test_integer_offset_shifts_the_sampling_grid() -> None:
    # A +1 x offset on every tap reads column ow + j instead of ow + j - 1: a conv padded (0 left, 2 right).
    x, weight, offset, _, _ = _rand_inputs(1, 2, 3, (6, 6), 1, og=1)
    off = torch.zeros_like(offset)
    off[:, 1::2] = 1.0
    out = deform_conv2d(x, weight, off, padding=1)
    want = F.conv2d(F.pad(x, (0, 2, 1, 1)), weight)
    torch.testing.assert_close(out, want, rtol=1e-10, atol=1e-10)


def test_gradcheck_input_weight_offset_mask_bias() -> None:
    x, weight, offset, mask, bias = _rand_inputs(1, 4, 2, (5, 4), 1, og=2, groups=2)
    tensors = [t.requires_grad_(True) for t in (x, weight, offset, mask, bias)]

    def fn(*ts: torch.Tensor) -> torch.Tensor:
        return deform_conv2d(ts[0], ts[1], ts[2], ts[3], ts[4], 1, 1, 1, 2, 2)

    assert torch.autograd.gradcheck(fn, tuple(tensors), eps=1e-6, atol=1e-5)


def test_custom_op_backward_matches_reference_autograd() -> None:
    x, weight, offset, mask, bias = _rand_inputs(2, 4, 4, (6, 5), 2, og=1)
    a = [t.clone().requires_grad_(True) for t in (x, weight, offset, mask, bias)]
    b = [t.clone().requires_grad_(True) for t in (x, weight, offset, mask, bias)]
    deform_conv2d(*a, stride=2, padding=1).square().sum().backward()
    deform_conv2d_reference(*b, stride=(2, 2), padding=(1, 1)).square().sum().backward()
    for ta, tb in zip(a, b, strict=True):
        assert ta.grad is not None and tb.grad is not None
        torch.testing.assert_close(ta.grad, tb.grad)


@pytest.mark.parametrize("modulated", [False, True])
def test_onnx_export_is_one_deformconv_node_matching_torch(tmp_path: Path, modulated: bool) -> None:
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(3)
    m = DeformConv2d(8, 12, 3, stride=2, padding=1, offset_groups=2, modulated=modulated).eval()
    torch.nn.init.normal_(m.offset_head.weight, std=0.3)  # non-zero, non-integer offsets
    torch.nn.init.normal_(m.offset_head.bias, std=0.5)
    x = torch.randn(2, 8, 15, 13)
    path = tmp_path / "dcn.onnx"
    torch.onnx.export(m, (x,), str(path), dynamo=True, external_data=False, opset_version=19,
                      input_names=["x"], output_names=["y"])
    model = onnx.load(str(path))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("DeformConv") == 1
    dcn = next(n for n in model.graph.node if n.op_type == "DeformConv")
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in dcn.attribute}
    assert list(attrs["strides"]) == [2, 2] and list(attrs["pads"]) == [1, 1, 1, 1] and attrs["offset_group"] == 2
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"x": x.numpy()})[0]
    with torch.no_grad():
        want = m(x).numpy()
        off, _ = m.offsets_and_mask(x)
    assert float(off.abs().max()) > 0.5
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("separable", [False, True])
def test_mac_count_includes_offset_branch_and_sampling(separable: bool) -> None:
    m = DeformConv2d(16, 16, 3, stride=1, padding=1, separable_offsets=separable)
    x = torch.randn(1, 16, 10, 10)
    plain = 16 * 16 * 9 * 100
    offset = (16 * 9 + 18 * 16) * 100 if separable else 18 * 16 * 9 * 100
    assert m.macs((x,), m(x)) == plain + offset + 16 * 9 * 100 * 4


def test_separable_offset_predictor_starts_at_zero_offsets() -> None:
    torch.manual_seed(1)
    m = DeformConv2d(8, 8, 3, padding=1, groups=4, separable_offsets=True)
    x = torch.randn(1, 8, 7, 7)
    torch.testing.assert_close(m(x), F.conv2d(x, m.weight, m.bias, 1, 1, 1, 4), rtol=1e-5, atol=1e-5)
