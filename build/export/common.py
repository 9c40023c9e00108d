"""Shared ONNX export steps: export (dynamo, opset pinned, no external data), I/O description, verification
(onnx.checker + onnxruntime through the daemon's own backend against the manifest), parity, manifest writing.
"""

from __future__ import annotations

import json
import logging
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from edge_agent.assets import ASSETS, sha256_file
from edge_agent.backends.base import Tensor
from edge_agent.backends.onnx import OnnxBackend
from edge_agent.manifest import MANIFEST_NAME, Manifest, TensorInfo, load_artifact, verify_session

log = logging.getLogger(__name__)

OPSET = 19  # DeformConv needs opset 19; every exported model pins the same opset

_DTYPES: dict[int, str] = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.UINT8: "uint8",
    onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.FLOAT16: "float16",
}


class ExportError(RuntimeError):
    """An export, verification or parity step failed; the message says which and by how much."""


def export_onnx(
    module: nn.Module,
    example: torch.Tensor,
    path: Path,
    *,
    input_name: str,
    output_names: Sequence[str],
    dynamic_shapes: Any = None,
    dim_names: Mapping[str, Mapping[int, str]] | None = None,
    opset: int = OPSET,
) -> onnx.ModelProto:
    """Export ``module`` (eval mode) with the dynamo exporter into a single self-contained .onnx file.

    ``dynamic_shapes`` is passed to ``torch.onnx.export`` (torch.export ``Dim`` objects) for the one input.
    ``dim_names`` renames the symbolic dimensions of graph inputs/outputs ({tensor: {axis: "H"}}), since the
    exporter names them after its internal symbols (e.g. ``32*h``). The model is checked with
    ``onnx.checker.check_model(full_check=True)`` before it is written.
    """
    module.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    program = torch.onnx.export(
        module,
        (example,),
        dynamo=True,
        opset_version=opset,
        input_names=[input_name],
        output_names=list(output_names),
        dynamic_shapes=(dynamic_shapes,) if dynamic_shapes is not None else None,
        external_data=False,
    )
    if program is None:
        raise ExportError("torch.onnx.export returned no program")
    model = program.model_proto
    got = [o.name for o in model.graph.output]
    if got != list(output_names):
        raise ExportError(f"exported outputs {got} != requested {list(output_names)}")
    for value in [*model.graph.input, *model.graph.output]:
        for axis, name in (dim_names or {}).get(value.name, {}).items():
            dim = value.type.tensor_type.shape.dim[axis]
            if not dim.dim_param:
                raise ExportError(f"{value.name} axis {axis} is static ({dim.dim_value}); cannot name it {name!r}")
            dim.dim_param = name
    strip_debug_metadata(model)
    onnx.checker.check_model(model, full_check=True)
    onnx.save_model(model, str(path), save_as_external_data=False)
    log.info("wrote %s (%d bytes, opset %d)", path, path.stat().st_size, opset)
    return model


def strip_debug_metadata(model: onnx.ModelProto) -> None:
    """Drop the exporter's debug metadata (per-node stack traces with absolute paths and line numbers, FX node
    text, module class paths; graph-level torch.export signature and range constraints, whose text order
    depends on PYTHONHASHSEED) and doc strings, so the shipped file is reproducible and leaks no build paths."""
    graphs: list[onnx.GraphProto | onnx.FunctionProto] = [model.graph, *model.functions]
    while graphs:
        g = graphs.pop()
        for node in g.node:
            del node.metadata_props[:]
            node.doc_string = ""
            for a in node.attribute:
                if a.HasField("g"):
                    graphs.append(a.g)
                graphs.extend(a.graphs)
        if isinstance(g, onnx.GraphProto):
            g.doc_string = ""
            del g.metadata_props[:]  # torch.export signature/range constraints, printed in hash-seed order
            for v in [*g.input, *g.output, *g.value_info]:
                del v.metadata_props[:]


def _tensor_info(value: onnx.ValueInfoProto, layout: str | None) -> TensorInfo:
    tt = value.type.tensor_type
    if tt.elem_type not in _DTYPES:
        raise ExportError(f"{value.name}: unsupported element type {onnx.TensorProto.DataType.Name(tt.elem_type)}")
    shape = tuple(d.dim_param if d.dim_param else int(d.dim_value) for d in tt.shape.dim)
    return TensorInfo.model_validate({"name": value.name, "shape": shape, "dtype": _DTYPES[tt.elem_type],
                                      "layout": layout})


def io_infos(
    model: onnx.ModelProto, layouts: Mapping[str, str]
) -> tuple[tuple[TensorInfo, ...], tuple[TensorInfo, ...]]:
    """Manifest TensorInfo for every graph input and output, read from the ONNX graph itself."""
    ins = tuple(_tensor_info(v, layouts.get(v.name)) for v in model.graph.input)
    outs = tuple(_tensor_info(v, layouts.get(v.name)) for v in model.graph.output)
    return ins, outs


def asset_source(asset_name: str) -> str:
    """Provenance text for a registry asset: package, version, file and both sha256 pins."""
    a = ASSETS[asset_name]
    p = a.package
    return (f"{p.registry}:{p.name}=={p.version} ({p.filename}, sha256 {p.sha256}) member {a.member} "
            f"(sha256 {a.sha256})")


def git_head(repo: Path) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], check=True, capture_output=True,
                             text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def run_onnx(path: Path, manifest: Manifest, feeds: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Load ``path`` with the daemon's OnnxBackend, check its I/O against the manifest, run ``feeds``."""
    backend = OnnxBackend(path)
    try:
        verify_session(manifest, backend.inputs, backend.outputs)
        return backend.run(feeds)
    finally:
        backend.close()


def max_abs_diff(reference: Mapping[str, Tensor], other: Mapping[str, Tensor]) -> dict[str, float]:
    """Per-name max |a - b| (shapes must match)."""
    out: dict[str, float] = {}
    for name, ref in reference.items():
        got = other[name]
        if tuple(ref.shape) != tuple(got.shape):
            raise ExportError(f"{name}: shape {tuple(got.shape)} != reference {tuple(ref.shape)}")
        out[name] = float(np.max(np.abs(ref.astype(np.float64) - got.astype(np.float64)))) if ref.size else 0.0
    return out


def write_manifest(manifest: Manifest, directory: Path) -> Path:
    """Write manifest.json and validate the directory with the daemon's loader (file size and sha256)."""
    path = directory / MANIFEST_NAME
    path.write_text(manifest.model_dump_json(indent=2) + "\n", encoding="utf-8")
    load_artifact(directory)
    return path


def round_trip_json(manifest: Manifest) -> Manifest:
    """The manifest as the daemon will read it back (JSON types: tuples become lists and back)."""
    return Manifest.model_validate(json.loads(manifest.model_dump_json()))


def file_facts(path: Path) -> tuple[str, int]:
    return sha256_file(path), path.stat().st_size
