"""A simulated HEF: its JSON description and the network computing its outputs.

Outputs come from the ONNX model the HEF was "compiled" from (ONNX Runtime, one thread), quantised to 8 bits
per tensor and dequantised as HailoRT's FLOAT32 outputs would be. Results are cached (as float32, so a replay
is one copy per output) by a fingerprint of the input frame: the benchmark plays the same file twice (a
priming pass, then the timed pass), so in the timed pass the simulator returns each output in microseconds and
the chip's occupancy is the configured chip time, not ONNX Runtime's CPU time.
Cache misses in the timed pass are counted.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.backends.hailo_manifest import quantise_u8

SIM_HEF_VERSION = 1

# Outputs by HEF file and frame fingerprint, shared by every SimNetwork of the process (a second Pipeline run
# over the same file replays the first run's outputs).
_LOCK = threading.Lock()
_COUNTS = {"hits": 0, "misses": 0}
_CACHES: dict[Path, dict[bytes, dict[str, np.ndarray]]] = {}


@dataclass(frozen=True)
class SimOutput:
    name: str  # HEF stream name
    onnx_name: str
    shape: tuple[int, ...]  # per frame, NHWC (H, W, C) or (C,)
    onnx_layout: str  # NCHW | NC


@dataclass(frozen=True)
class SimHef:
    path: Path
    task: str  # detector | classifier
    network_name: str
    onnx_path: Path
    input_name: str
    onnx_input_name: str
    input_shape: tuple[int, int, int]  # (H, W, 3) uint8
    swap_rb: bool  # HEF takes BGR, the ONNX wants RGB (or the reverse)
    scale: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    outputs: tuple[SimOutput, ...]


def load_sim_hef(path: Path) -> SimHef:
    try:
        raw: dict[str, Any] = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a simulated HEF ({exc})") from None
    if raw.get("sim_hef_version") != SIM_HEF_VERSION:
        raise ValueError(f"{path}: not a simulated HEF (sim_hef_version missing); build it with "
                         "edge_agent.bench.hailo_sim.compile.sim_compile")
    inp = raw["input"]
    return SimHef(
        path=Path(path), task=raw["task"], network_name=raw["network_name"],
        onnx_path=(Path(path).parent / raw["onnx"]).resolve(),
        input_name=inp["name"], onnx_input_name=inp["onnx_name"],
        input_shape=(int(inp["shape"][0]), int(inp["shape"][1]), int(inp["shape"][2])),
        swap_rb=bool(inp["swap_rb"]), scale=float(inp["scale"]),
        mean=(float(inp["mean"][0]), float(inp["mean"][1]), float(inp["mean"][2])),
        std=(float(inp["std"][0]), float(inp["std"][1]), float(inp["std"][2])),
        outputs=tuple(SimOutput(o["name"], o["onnx_name"], tuple(int(d) for d in o["shape"]), o["onnx_layout"])
                      for o in raw["outputs"]),
    )


def fingerprint(frame: np.ndarray) -> bytes:
    """A cheap key of a frame (~20 us for 640x384): BLAKE2b of every 8th pixel of every 8th row + the shape.
    Two inputs sharing it are the same picture for any practical purpose (and would give near-equal outputs)."""
    sub = np.ascontiguousarray(frame[::8, ::8])
    return hashlib.blake2b(sub.tobytes() + str(frame.shape).encode(), digest_size=16).digest()


class SimNetwork:
    """Computes a simulated HEF's outputs for one uint8 NHWC frame (cached by frame fingerprint)."""

    def __init__(self, hef: SimHef) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self.hef = hef
        self.output_names = tuple(o.name for o in hef.outputs)
        self._session = ort.InferenceSession(str(hef.onnx_path), opts, providers=["CPUExecutionProvider"])
        self._cache = _CACHES.setdefault(hef.path.resolve(), {})
        self._lock = _LOCK

    def _compute(self, frame: np.ndarray) -> dict[str, np.ndarray]:
        h = self.hef
        pixels = frame[..., ::-1] if h.swap_rb else frame
        mean, std = np.asarray(h.mean, np.float32), np.asarray(h.std, np.float32)
        x = (pixels.astype(np.float32) * np.float32(h.scale) - mean) / std
        feeds = {h.onnx_input_name: np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)}
        names = [o.onnx_name for o in h.outputs]
        results = dict(zip(names, self._session.run(names, feeds), strict=True))
        out: dict[str, np.ndarray] = {}
        for o in h.outputs:
            y = np.asarray(results[o.onnx_name], np.float32)[0]
            if o.onnx_layout == "NCHW":
                y = y.transpose(1, 2, 0)
            q, scale, zp = quantise_u8(np.ascontiguousarray(y).reshape(o.shape))
            out[o.name] = (q.astype(np.float32) - np.float32(zp)) * np.float32(scale)  # as HailoRT's FLOAT32 output
        return out

    def infer_into(self, frame: np.ndarray, outs: dict[str, np.ndarray]) -> None:
        if tuple(frame.shape) != self.hef.input_shape or frame.dtype != np.uint8:
            raise ValueError(f"{self.hef.network_name}: expected uint8 {self.hef.input_shape}, got "
                             f"{frame.dtype} {tuple(frame.shape)}")
        key = fingerprint(frame)
        with self._lock:
            cached = self._cache.get(key)
        if cached is None:
            cached = self._compute(frame)
            with self._lock:
                self._cache[key] = cached
                _COUNTS["misses"] += 1
        else:
            with self._lock:
                _COUNTS["hits"] += 1
        for name, values in cached.items():
            np.copyto(outs[name], values)



def clear_caches() -> None:
    with _LOCK:
        _CACHES.clear()


def cache_counts(reset: bool = False) -> dict[str, int]:
    """Cache hits and misses of every simulated network since the last reset."""
    with _LOCK:
        counts = dict(_COUNTS)
        if reset:
            _COUNTS.update(hits=0, misses=0)
    return counts
