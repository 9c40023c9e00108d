"""ONNX Runtime backend (CPU execution provider only)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnxruntime as ort

from edge_agent.backends.base import BackendError, Tensor, TensorSpec

log = logging.getLogger(__name__)

GraphOptimization = Literal["disable", "basic", "extended", "all"]

_OPT_LEVELS: dict[str, ort.GraphOptimizationLevel] = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}

# ONNX tensor element types as onnxruntime names them -> numpy dtype names.
_ORT_TYPES: dict[str, str] = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(uint8)": "uint8",
    "tensor(int8)": "int8",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(bool)": "bool",
}

# Operators that need a recent onnxruntime, with the first version that runs them on CPU.
_OP_MIN_VERSION: dict[str, str] = {"DeformConv": "1.25.1"}


def _spec(arg: Any) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) else None for d in arg.shape)
    dtype = _ORT_TYPES.get(arg.type)
    if dtype is None:
        raise BackendError(f"tensor {arg.name!r} has unsupported element type {arg.type}")
    return TensorSpec(name=arg.name, shape=shape, dtype=dtype)


def _load_hint(message: str) -> str:
    for op, version in _OP_MIN_VERSION.items():
        if op in message:
            return (f" The model uses {op}, which onnxruntime runs on CPU from version {version}; "
                    f"installed is {ort.__version__}. Upgrade with: pip install 'onnxruntime>={version}'.")
    return ""


class OnnxBackend:
    """A model loaded in an onnxruntime ``InferenceSession`` on the CPU provider.

    ``intra_op_threads``/``inter_op_threads``: 0 lets onnxruntime choose. ``spin=False`` turns off the intra-op
    thread pool's busy-wait (``session.intra_op.allow_spinning=0``), which costs a little latency but leaves the
    cores to the rest of the pipeline. Execution mode is sequential. ``mem_pattern``: ONNX Runtime's memory
    pattern plans the activation buffers once per input shape and keeps the arena at the peak of every shape
    seen; right for a fixed-shape model (the detector), wasteful for a dynamic batch (the classifier, whose
    batch follows the face count: up to ~30 MB more RSS at batch 16), so the engine turns it off there.
    """

    kind = "onnx"

    def __init__(
        self,
        path: Path | str,
        intra_op_threads: int = 0,
        inter_op_threads: int = 0,
        graph_optimization: GraphOptimization = "all",
        spin: bool = False,
        *,
        mem_pattern: bool = True,
    ) -> None:
        self.path = Path(path)
        if graph_optimization not in _OPT_LEVELS:
            raise BackendError(f"graph_optimization must be one of {sorted(_OPT_LEVELS)}, got {graph_optimization!r}")
        if intra_op_threads < 0 or inter_op_threads < 0:
            raise BackendError(f"thread counts must be >= 0 (0 = onnxruntime default), got "
                               f"intra={intra_op_threads} inter={inter_op_threads}")
        if not self.path.is_file():
            raise BackendError(f"ONNX model {self.path} does not exist")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = intra_op_threads
        opts.inter_op_num_threads = inter_op_threads
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = _OPT_LEVELS[graph_optimization]
        opts.enable_mem_pattern = mem_pattern
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        opts.add_session_config_entry("session.inter_op.allow_spinning", "1" if spin else "0")
        opts.log_severity_level = 3
        try:
            self._session: ort.InferenceSession | None = ort.InferenceSession(str(self.path), sess_options=opts,
                                                 providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises several unrelated exception types
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BackendError(f"onnxruntime {ort.__version__} cannot load {self.path}: {msg}.{_load_hint(str(exc))}"
                               ) from exc
        self._inputs = {a.name: _spec(a) for a in self._session.get_inputs()}
        self._outputs = {a.name: _spec(a) for a in self._session.get_outputs()}
        self._output_names = list(self._outputs)
        log.info("loaded %s (intra=%d inter=%d opt=%s spin=%s mem_pattern=%s)", self.path.name, intra_op_threads,
                 inter_op_threads, graph_optimization, spin, mem_pattern)

    @property
    def inputs(self) -> Mapping[str, TensorSpec]:
        return self._inputs

    @property
    def outputs(self) -> Mapping[str, TensorSpec]:
        return self._outputs

    def run(self, feeds: Mapping[str, Tensor]) -> dict[str, Tensor]:
        if self._session is None:
            raise BackendError(f"{self.path.name}: backend is closed; create a new OnnxBackend to run again")
        if set(feeds) != set(self._inputs):
            raise BackendError(f"{self.path.name}: feeds {sorted(feeds)} do not match model inputs "
                               f"{sorted(self._inputs)}")
        for name, arr in feeds.items():
            want = self._inputs[name].dtype
            if arr.dtype != np.dtype(want):
                raise BackendError(f"{self.path.name}: input {name!r} must be {want}, got {arr.dtype}")
        try:
            results = self._session.run(self._output_names, dict(feeds))
        except Exception as exc:
            shapes = {k: tuple(v.shape) for k, v in feeds.items()}
            raise BackendError(f"{self.path.name}: inference failed for input shapes {shapes}: {exc}") from exc
        return dict(zip(self._output_names, results, strict=True))

    def close(self) -> None:
        # onnxruntime frees the session when the last reference goes away.
        self._session = None
