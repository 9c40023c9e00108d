"""Multiply-accumulate count of an ONNX model at a given input shape (Conv, ConvTranspose, Gemm, MatMul,
DeformConv), from the graph and ONNX shape inference.

Conventions: MACs as thop counts them for convolutions (``Cout * Hout * Wout * Cin/groups * kH * kW`` per
image, bias and activations not counted), which is what the seed's "FLOPs" column reports (RetinaFace-0.25 at
640x640: 1.03 G). FLOPs = 2 x MACs. Needs the ``onnx`` package (build extra); without it the count is None
and edge-bench says so.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def _shape(vi: Any) -> list[int] | None:
    dims = vi.type.tensor_type.shape.dim
    out = []
    for d in dims:
        if not d.HasField("dim_value"):
            return None
        out.append(int(d.dim_value))
    return out


def onnx_macs(path: Path, input_shapes: dict[str, tuple[int, ...]]) -> int | None:
    """MACs of one forward pass with the given concrete input shapes; None when ``onnx`` is not installed."""
    try:
        import onnx
        from onnx import shape_inference
    except ImportError:
        log.warning("the onnx package is not installed: no GFLOP figure (pip install onnx)")
        return None
    model = onnx.load(str(path), load_external_data=False)
    for inp in model.graph.input:
        if inp.name in input_shapes:
            dims = inp.type.tensor_type.shape.dim
            for d, v in zip(dims, input_shapes[inp.name], strict=True):
                d.Clear()
                d.dim_value = int(v)
    inferred = shape_inference.infer_shapes(model, data_prop=True)
    shapes: dict[str, list[int] | None] = {}
    for vi in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        shapes[vi.name] = _shape(vi)
    for init in inferred.graph.initializer:
        shapes[init.name] = list(init.dims)
    total = 0
    unknown = 0
    for node in inferred.graph.node:
        if node.op_type not in ("Conv", "ConvTranspose", "Gemm", "MatMul", "DeformConv"):
            continue
        out = shapes.get(node.output[0])
        w = shapes.get(node.input[1]) if len(node.input) > 1 else None
        if out is None or w is None:
            unknown += 1
            continue
        if node.op_type in ("Conv", "DeformConv"):
            # weight (Cout, Cin/g, kH, kW); output (N, Cout, H, W): Cin/g * kH * kW per output element
            total += math.prod(out) * math.prod(w[1:])
        elif node.op_type == "ConvTranspose":
            inp = shapes.get(node.input[0])
            if inp is None:
                unknown += 1
                continue
            total += math.prod(inp) * math.prod(w[1:])
        else:  # Gemm / MatMul: output elements x inner dimension
            a = shapes.get(node.input[0])
            if a is None:
                unknown += 1
                continue
            trans_a = any(at.name == "transA" and at.i == 1 for at in node.attribute)
            inner = a[-2] if trans_a else a[-1]
            total += math.prod(out) * inner
    if unknown:
        log.warning("%s: %d compute nodes had unknown shapes and were not counted", path.name, unknown)
    return total
