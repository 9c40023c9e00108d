"""Multiply-accumulate count of an ONNX model at a given input shape (Conv, ConvTranspose, Gemm, MatMul,
DeformConv), from the graph and ONNX shape inference (shapes it cannot infer, e.g. after DeformConv, are read
from one onnxruntime run on zeros).

Conventions: MACs as thop counts them for convolutions (``Cout * Hout * Wout * Cin/groups * kH * kW`` per
image, bias and activations not counted; DeformConv adds 4 MACs per bilinear sample, 5 with a mask, as
``build/ops/deform_conv.py`` counts), which is what the seed's "FLOPs" column reports (RetinaFace-0.25 at
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


_COMPUTE = ("Conv", "ConvTranspose", "Gemm", "MatMul", "DeformConv")


def _shapes_by_running(model: Any, input_shapes: dict[str, tuple[int, ...]], names: list[str]
                       ) -> dict[str, list[int] | None]:
    """Shapes ONNX shape inference could not give (e.g. after DeformConv), read from one onnxruntime run on
    zeros with those tensors exposed as extra graph outputs."""
    import numpy as np
    import onnx
    import onnxruntime as ort

    m = onnx.ModelProto()
    m.CopyFrom(model)
    present = {o.name for o in m.graph.output}
    init = {i.name for i in m.graph.initializer}
    for name in names:
        if name not in present and name not in init:
            m.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {}
    for inp in sess.get_inputs():
        if inp.name not in input_shapes:
            raise ValueError(f"no shape given for model input {inp.name!r}")
        dtype = np.uint8 if inp.type == "tensor(uint8)" else np.float32
        feeds[inp.name] = np.zeros(input_shapes[inp.name], dtype)
    wanted = [o.name for o in sess.get_outputs() if o.name in set(names)]
    values = sess.run(wanted, feeds)
    return {n: list(v.shape) for n, v in zip(wanted, values, strict=True)}


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
    compute = [n for n in inferred.graph.node if n.op_type in _COMPUTE]
    missing = {t for n in compute for t in (n.output[0], *n.input[:2]) if t and shapes.get(t) is None}
    if missing:
        shapes.update(_shapes_by_running(model, input_shapes, sorted(missing)))
    total = 0
    unknown = 0
    for node in inferred.graph.node:
        if node.op_type not in _COMPUTE:
            continue
        out = shapes.get(node.output[0])
        w = shapes.get(node.input[1]) if len(node.input) > 1 else None
        if out is None or w is None:
            unknown += 1
            continue
        if node.op_type in ("Conv", "DeformConv"):
            # weight (Cout, Cin/g, kH, kW); output (N, Cout, H, W): Cin/g * kH * kW per output element
            total += math.prod(out) * math.prod(w[1:])
            x = shapes.get(node.input[0])
            if node.op_type == "DeformConv" and x is not None:
                # bilinear sampling: 4 MACs per sampled value, +1 with a modulation mask (build/ops convention)
                modulated = len(node.input) > 4 and bool(node.input[4])
                total += out[0] * out[2] * out[3] * x[1] * math.prod(w[2:]) * (5 if modulated else 4)
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
