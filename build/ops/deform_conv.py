"""Deformable convolution (DCNv1 / DCNv2 with a modulation mask) in plain torch, exportable to ONNX DeformConv.

Semantics are those of the ONNX ``DeformConv`` operator (opset 19), which match torchvision's
``deform_conv2d``:

* ``x``      (N, C_in, H, W)
* ``weight`` (C_out, C_in / groups, kH, kW)
* ``offset`` (N, offset_groups * kH * kW * 2, oH, oW); for offset group ``g`` and kernel tap ``k = i * kW + j``
  channel ``(g * kH * kW + k) * 2`` is the y (row) offset and the next channel the x (column) offset.
* ``mask``   (N, offset_groups * kH * kW, oH, oW) or None (DCNv1: all ones).
* ``bias``   (C_out,) or None.

Sampling point of output (oh, ow) and tap (i, j):
``y = oh * stride_h - pad_h + i * dil_h + dy``, ``x = ow * stride_w - pad_w + j * dil_w + dx``, read with
bilinear interpolation where pixels outside the image count as zero (``grid_sample`` with zero padding).

The op is registered as the torch custom op ``edge_build::deform_conv2d`` (trainable: its backward is the
vjp of the same plain-torch reference) and, while ``torch.onnx.export`` runs, it is emitted as a single
standard ONNX ``DeformConv`` node through ``torch.onnx.ops.symbolic`` -- so any model using
:class:`DeformConv2d` exports with the dynamo exporter without a custom translation table.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

log = logging.getLogger(__name__)

ONNX_OPSET = 19  # DeformConv was introduced in opset 19 (onnxruntime >= 1.25.1 runs it on CPU)

Pair = tuple[int, int]


def _pair(v: int | Sequence[int]) -> Pair:
    if isinstance(v, int):
        return (v, v)
    a, b = v
    return (int(a), int(b))


def output_size(size: Pair, kernel: Pair, stride: Pair, padding: Pair, dilation: Pair) -> Pair:
    """Spatial output size of a (deformable) convolution, as for nn.Conv2d."""
    return tuple(  # type: ignore[return-value]
        (size[d] + 2 * padding[d] - dilation[d] * (kernel[d] - 1) - 1) // stride[d] + 1 for d in range(2)
    )


def deform_conv2d_reference(  # noqa: PLR0917 -- mirrors torchvision's signature
    x: Tensor,
    weight: Tensor,
    offset: Tensor,
    mask: Tensor | None = None,
    bias: Tensor | None = None,
    stride: Pair = (1, 1),
    padding: Pair = (0, 0),
    dilation: Pair = (1, 1),
    groups: int = 1,
    offset_groups: int = 1,
) -> Tensor:
    """Plain-torch deformable convolution (differentiable w.r.t. every tensor argument).

    Vectorised: one ``grid_sample`` over all taps and offset groups, then one grouped matmul.
    """
    n, c_in, h, w = x.shape
    c_out, c_in_g, kh, kw = weight.shape
    if c_in != c_in_g * groups:
        raise ValueError(f"deform_conv2d: input has {c_in} channels, weight expects {c_in_g} x {groups} groups")
    if c_in % offset_groups:
        raise ValueError(f"deform_conv2d: {c_in} input channels are not divisible by offset_groups={offset_groups}")
    taps = kh * kw
    oh, ow = output_size((h, w), (kh, kw), stride, padding, dilation)
    if offset.shape != (n, offset_groups * taps * 2, oh, ow):
        raise ValueError(
            f"deform_conv2d: offset shape {tuple(offset.shape)} != expected {(n, offset_groups * taps * 2, oh, ow)}"
        )
    if mask is not None and mask.shape != (n, offset_groups * taps, oh, ow):
        want = (n, offset_groups * taps, oh, ow)
        raise ValueError(f"deform_conv2d: mask shape {tuple(mask.shape)} != expected {want}")

    dtype, dev = x.dtype, x.device
    # Base sampling grid (taps, oH, oW) for y and x, in input pixel coordinates.
    ys = torch.arange(oh, dtype=dtype, device=dev) * stride[0] - padding[0]
    xs = torch.arange(ow, dtype=dtype, device=dev) * stride[1] - padding[1]
    ki = torch.arange(kh, dtype=dtype, device=dev) * dilation[0]
    kj = torch.arange(kw, dtype=dtype, device=dev) * dilation[1]
    base_y = (ki[:, None, None, None] + ys[None, None, :, None]).expand(kh, kw, oh, ow).reshape(taps, oh, ow)
    base_x = (kj[None, :, None, None] + xs[None, None, None, :]).expand(kh, kw, oh, ow).reshape(taps, oh, ow)

    off = offset.reshape(n, offset_groups, taps, 2, oh, ow)
    py = base_y + off[:, :, :, 0]  # (N, G, taps, oH, oW)
    px = base_x + off[:, :, :, 1]
    # grid_sample(align_corners=False): pixel p maps to (2p + 1) / size - 1; outside pixels read as zero.
    gy = (2.0 * py + 1.0) / h - 1.0
    gx = (2.0 * px + 1.0) / w - 1.0
    grid = torch.stack((gx, gy), dim=-1).reshape(n * offset_groups, taps * oh, ow, 2)

    xg = x.reshape(n * offset_groups, c_in // offset_groups, h, w)
    sampled = F.grid_sample(xg, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    sampled = sampled.reshape(n, offset_groups, c_in // offset_groups, taps, oh, ow)
    if mask is not None:
        sampled = sampled * mask.reshape(n, offset_groups, 1, taps, oh, ow)
    # Columns (N, groups, C_in/groups * taps, L) against weight (groups, C_out/groups, C_in/groups * taps).
    cols = sampled.reshape(n, groups, c_in_g * taps, oh * ow)
    wmat = weight.reshape(groups, c_out // groups, c_in_g * taps)
    out = torch.einsum("gok,ngkl->ngol", wmat, cols).reshape(n, c_out, oh, ow)
    if bias is not None:
        out = out + bias.reshape(1, c_out, 1, 1)
    return out


# --- torch custom op (opaque to tracing, trainable through the reference's vjp) -----------------------------


@torch.library.custom_op("edge_build::deform_conv2d", mutates_args=())
def _deform_conv2d_op(  # noqa: PLR0917 -- mirrors torchvision's signature
    x: Tensor,
    weight: Tensor,
    offset: Tensor,
    mask: Tensor | None,
    bias: Tensor | None,
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    groups: int,
    offset_groups: int,
) -> Tensor:
    return deform_conv2d_reference(
        x, weight, offset, mask, bias, _pair(stride), _pair(padding), _pair(dilation), groups, offset_groups
    ).contiguous()


@_deform_conv2d_op.register_fake
def _(  # noqa: PLR0917 -- mirrors torchvision's signature
    x: Tensor,
    weight: Tensor,
    offset: Tensor,
    mask: Tensor | None,
    bias: Tensor | None,
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    groups: int,
    offset_groups: int,
) -> Tensor:
    oh, ow = output_size(
        (x.shape[2], x.shape[3]), (weight.shape[2], weight.shape[3]), _pair(stride), _pair(padding), _pair(dilation)
    )
    return x.new_empty((x.shape[0], weight.shape[0], oh, ow))


def _setup_context(ctx: torch.autograd.function.FunctionCtx, inputs: tuple[object, ...], output: Tensor) -> None:
    x, weight, offset, mask, bias, stride, padding, dilation, groups, offset_groups = inputs
    ctx.save_for_backward(x, weight, offset, mask, bias)  # type: ignore[attr-defined]
    ctx.conf = (stride, padding, dilation, groups, offset_groups)  # type: ignore[attr-defined]


def _backward(ctx: torch.autograd.function.FunctionCtx, grad_out: Tensor) -> tuple[Tensor | None, ...]:
    x, weight, offset, mask, bias = ctx.saved_tensors  # type: ignore[attr-defined]
    stride, padding, dilation, groups, offset_groups = ctx.conf  # type: ignore[attr-defined]
    leaves = [t.detach().requires_grad_(True) if t is not None else None for t in (x, weight, offset, mask, bias)]
    with torch.enable_grad():
        out = deform_conv2d_reference(
            leaves[0], leaves[1], leaves[2], leaves[3], leaves[4],  # type: ignore[arg-type]
            _pair(stride), _pair(padding), _pair(dilation), groups, offset_groups,
        )
        wrt = [t for t in leaves if t is not None]
        grads = iter(torch.autograd.grad(out, wrt, grad_out, allow_unused=True))
    result: list[Tensor | None] = [next(grads) if t is not None else None for t in leaves]
    return (*result, None, None, None, None, None)


_deform_conv2d_op.register_autograd(_backward, setup_context=_setup_context)


def deform_conv2d(  # noqa: PLR0917 -- mirrors torchvision's signature
    x: Tensor,
    weight: Tensor,
    offset: Tensor,
    mask: Tensor | None = None,
    bias: Tensor | None = None,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    offset_groups: int = 1,
) -> Tensor:
    """Deformable conv; a single ONNX ``DeformConv`` node under ``torch.onnx.export``, the custom op otherwise."""
    s, p, d = _pair(stride), _pair(padding), _pair(dilation)
    if torch.onnx.is_in_onnx_export():
        kh, kw = int(weight.shape[2]), int(weight.shape[3])
        oh, ow = output_size((x.shape[2], x.shape[3]), (kh, kw), s, p, d)  # SymInts stay symbolic (dynamic H/W)
        return torch.onnx.ops.symbolic(
            "DeformConv",
            (x, weight, offset, bias, mask),
            {
                "dilations": list(d),
                "group": groups,
                "kernel_shape": [kh, kw],
                "offset_group": offset_groups,
                "pads": [p[0], p[1], p[0], p[1]],
                "strides": list(s),
            },
            dtype=x.dtype,
            shape=(x.shape[0], weight.shape[0], oh, ow),
            version=ONNX_OPSET,
        )
    return _deform_conv2d_op(x, weight, offset, mask, bias, list(s), list(p), list(d), groups, offset_groups)


class DeformConv2d(nn.Module):
    """Deformable kxk convolution with its own offset (and optional mask) predictor.

    The offset/mask predictor is a plain conv with the same kernel/stride/padding, zero-initialised: a fresh
    DeformConv2d samples the regular grid (offsets 0, mask sigmoid(0) * 2 = 1), i.e. it equals its plain conv
    with the same weight -- so a plain conv's weight can be loaded into ``weight``/``bias`` unchanged.
    """

    def __init__(  # noqa: PLR0917 -- mirrors torchvision's signature
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int = 1,
        dilation: int = 1,
        groups: int = 1,
        offset_groups: int = 1,
        bias: bool = True,
        modulated: bool = False,
        separable_offsets: bool = False,
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride = _pair(kernel_size), _pair(stride)
        self.padding, self.dilation = _pair(padding), _pair(dilation)
        self.groups, self.offset_groups, self.modulated = groups, offset_groups, modulated
        kh, kw = self.kernel_size
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, kh, kw))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        taps = offset_groups * kh * kw
        off_ch = taps * (3 if modulated else 2)
        self.offset_conv: nn.Module
        if separable_offsets:  # depthwise kxk -> 1x1: ~C*k*k + C*off_ch weights instead of C*off_ch*k*k
            self.offset_conv = nn.Sequential(
                nn.Conv2d(in_channels, in_channels, self.kernel_size, self.stride, self.padding, self.dilation,
                          groups=in_channels, bias=False),
                nn.Conv2d(in_channels, off_ch, 1),
            )
        else:
            self.offset_conv = nn.Conv2d(
                in_channels, off_ch, self.kernel_size, self.stride, self.padding, self.dilation
            )
        self.reset_parameters()

    @property
    def offset_head(self) -> nn.Conv2d:
        """The last conv of the offset predictor (zero-initialised)."""
        last = self.offset_conv[-1] if isinstance(self.offset_conv, nn.Sequential) else self.offset_conv
        assert isinstance(last, nn.Conv2d)
        return last

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight.shape[1] * self.kernel_size[0] * self.kernel_size[1]
            bound = 1 / math.sqrt(fan_in)
            nn.init.uniform_(self.bias, -bound, bound)
        if isinstance(self.offset_conv, nn.Sequential):
            nn.init.kaiming_uniform_(self.offset_conv[0].weight, a=math.sqrt(5))
        nn.init.zeros_(self.offset_head.weight)
        nn.init.zeros_(self.offset_head.bias)

    def offsets_and_mask(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        om = self.offset_conv(x)
        if not self.modulated:
            return om, None
        taps = self.offset_groups * self.kernel_size[0] * self.kernel_size[1]
        offset, m = om[:, : 2 * taps], om[:, 2 * taps :]
        return offset, 2.0 * torch.sigmoid(m)

    def forward(self, x: Tensor) -> Tensor:
        offset, mask = self.offsets_and_mask(x)
        return deform_conv2d(
            x, self.weight, offset, mask, self.bias,
            self.stride, self.padding, self.dilation, self.groups, self.offset_groups,
        )

    def macs(self, inputs: tuple[Tensor, ...], output: Tensor) -> int:
        """MACs of one forward (build/flops.py protocol): offset predictor + bilinear sampling + the conv.

        Sampling is counted as 4 multiply-accumulates per sampled value (bilinear), the mask as 1.
        """
        x = inputs[0]
        n, c_in = int(x.shape[0]), int(x.shape[1])
        positions = n * int(output.shape[2]) * int(output.shape[3])
        taps = self.kernel_size[0] * self.kernel_size[1]
        main = positions * self.out_channels * (c_in // self.groups) * taps
        offset = 0
        for mod in self.offset_conv.modules():
            if isinstance(mod, nn.Conv2d):
                k = mod.kernel_size[0] * mod.kernel_size[1]
                offset += positions * mod.out_channels * (mod.in_channels // mod.groups) * k
        sampling = positions * c_in * taps * (5 if self.modulated else 4)
        return main + offset + sampling

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, groups={self.groups}, offset_groups={self.offset_groups}, "
            f"modulated={self.modulated}"
        )
