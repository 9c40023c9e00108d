"""The fake "chip": environment-driven device state and the ONNX Runtime stand-in for a compiled HEF.

A fake HEF is a small JSON file (written by ``tests/fakes/fake_hef.py``)::

    {"fake_hef_version": 1, "network_name": "...", "arch": "hailo8", "onnx": "model.onnx",
     "input": {"name": "net/input_layer1", "onnx_name": "input", "shape": [H, W, 3],
               "color_order": "BGR", "onnx_color_order": "RGB", "scale": 1/255, "mean": [...], "std": [...]},
     "outputs": [{"name": "net/conv1", "onnx_name": "cls_8", "shape": [H, W, C] | [K],
                  "onnx_layout": "NCHW" | "NHWC" | "NC", "quant": {"scale": s, "zero_point": z}}]}

The chip takes the uint8 NHWC frame the HEF would take (normalisation and colour conversion folded in, as the
DFC model script does it), converts it to the float NCHW tensor the ONNX expects, runs it, and returns each
output in the HEF's NHWC stream shape, quantised to uint8 with the output's quant info and (for FLOAT32
outputs) dequantised again on the "host" -- the values land on the same 8-bit grid a real HEF's would.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_VERSION = "4.20.0"
DEVICE_ID = "0000:01:00.0"
KNOWN_FAULTS = {"device_busy", "no_device", "timeout_once", "timeout_always", "service_down"}


def library_version() -> str:
    return os.environ.get("FAKE_HAILO_VERSION", DEFAULT_VERSION)


def driver_version() -> str:
    return os.environ.get("FAKE_HAILO_DRIVER_VERSION", library_version())


def device_arch() -> str:
    arch = os.environ.get("FAKE_HAILO_ARCH", "HAILO8").upper()
    if arch not in ("HAILO8", "HAILO8L"):
        raise ValueError(f"FAKE_HAILO_ARCH must be HAILO8 or HAILO8L, got {arch!r}")
    return arch


def faults() -> set[str]:
    raw = {f.strip() for f in os.environ.get("FAKE_HAILO_FAULTS", "").split(",") if f.strip()}
    unknown = raw - KNOWN_FAULTS
    if unknown:
        raise ValueError(f"unknown FAKE_HAILO_FAULTS {sorted(unknown)}; known: {sorted(KNOWN_FAULTS)}")
    return raw


def queue_size() -> int:
    return int(os.environ.get("FAKE_HAILO_QUEUE_SIZE", "4"))


def lock_path() -> Path:
    default = Path(tempfile.gettempdir()) / f"fake-hailo0-{os.getuid()}.lock"
    return Path(os.environ.get("FAKE_HAILO_LOCK", str(default)))


# Which HEF archs run on which device arch (HailoRT: a hailo8l HEF also runs on a Hailo-8; not vice versa).
COMPATIBLE = {"HAILO8": {"hailo8", "hailo8r", "hailo8l"}, "HAILO8L": {"hailo8l"}}


@dataclass(frozen=True)
class StreamInfo:
    name: str
    onnx_name: str
    shape: tuple[int, ...]
    onnx_layout: str
    quant_scale: float
    quant_zp: float


@dataclass(frozen=True)
class FakeHefFile:
    path: Path
    network_name: str
    arch: str
    onnx_path: Path
    input: StreamInfo
    input_color_order: str
    onnx_color_order: str
    scale: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    outputs: tuple[StreamInfo, ...]


class HefParseError(ValueError):
    pass


def parse_hef(path: Path) -> FakeHefFile:
    try:
        raw: dict[str, Any] = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HefParseError(f"{path}: not a fake HEF ({exc})") from None
    if raw.get("fake_hef_version") != 1:
        raise HefParseError(f"{path}: not a fake HEF (fake_hef_version missing)")
    inp = raw["input"]
    outs = tuple(
        StreamInfo(o["name"], o["onnx_name"], tuple(o["shape"]), o["onnx_layout"],
                   float(o["quant"]["scale"]), float(o["quant"]["zero_point"]))
        for o in raw["outputs"]
    )
    return FakeHefFile(
        path=Path(path),
        network_name=raw["network_name"],
        arch=raw["arch"],
        onnx_path=(Path(path).parent / raw["onnx"]).resolve(),
        input=StreamInfo(inp["name"], inp["onnx_name"], tuple(inp["shape"]), "NHWC", 1.0, 0.0),
        input_color_order=inp["color_order"],
        onnx_color_order=inp["onnx_color_order"],
        scale=float(inp["scale"]),
        mean=tuple(inp["mean"]),  # type: ignore[arg-type]
        std=tuple(inp["std"]),  # type: ignore[arg-type]
        outputs=outs,
    )


class Network:
    """One configured network on the fake chip: ONNX Runtime behind the HEF's uint8 NHWC interface."""

    def __init__(self, hef: FakeHefFile) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self.hef = hef
        self.session = ort.InferenceSession(str(hef.onnx_path), opts, providers=["CPUExecutionProvider"])

    def _to_onnx_input(self, frame: np.ndarray) -> np.ndarray:
        x = frame.astype(np.float32)
        if self.hef.input_color_order != self.hef.onnx_color_order:
            x = x[..., ::-1]
        x = (x * self.hef.scale - np.asarray(self.hef.mean, np.float32)) / np.asarray(self.hef.std, np.float32)
        return np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)

    def infer(self, frame: np.ndarray) -> dict[str, np.ndarray]:
        """One frame (H, W, 3) uint8 -> {output name: quantised uint8 array in the stream shape}."""
        feeds = {self.hef.input.onnx_name: self._to_onnx_input(frame)}
        names = [o.onnx_name for o in self.hef.outputs]
        results = dict(zip(names, self.session.run(names, feeds), strict=True))
        out: dict[str, np.ndarray] = {}
        for o in self.hef.outputs:
            y = np.asarray(results[o.onnx_name], np.float32)[0]  # drop the batch of one
            if o.onnx_layout == "NCHW":
                y = y.transpose(1, 2, 0)
            y = y.reshape(o.shape)
            q = np.clip(np.rint(y / o.quant_scale + o.quant_zp), 0, 255).astype(np.uint8)
            out[o.name] = q
        return out
