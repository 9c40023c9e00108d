"""The artifact contract: every model file in ``models/`` carries a ``manifest.json`` beside it.

The manifest says how to feed the model (input names, shapes, layout, dtype, colour order, scale, mean/std,
resize policy), how to read it (output names and what they mean, anchor spec, labels), and where it came
from (sha256, size, provenance, licence). The daemon checks manifest <-> file <-> runtime session at
startup and refuses to start on any mismatch, saying what differs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edge_agent.assets import sha256_file
from edge_agent.backends.base import TensorSpec

MANIFEST_NAME = "manifest.json"


class ManifestError(RuntimeError):
    """A model artifact does not match its manifest (or the manifest is invalid)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TensorInfo(_Strict):
    name: str
    # Integers are fixed sizes; strings name a dynamic dimension ("N", "H", "W").
    shape: tuple[int | str, ...]
    dtype: Literal["float32", "uint8", "int64", "float16"]
    layout: str | None = None  # "NCHW", "NHWC", "NC", "NAC" (batch, anchors, channels) ...


class Preprocess(_Strict):
    input_size: tuple[int, int] = Field(description="(width, height) the model runs at by default")
    dynamic_size: bool = Field(False, description="H and W may change (multiples of size_multiple)")
    size_multiple: int = Field(32, ge=1)
    resize: Literal["letterbox", "stretch"]
    color_order: Literal["RGB", "BGR"]
    layout: Literal["NCHW", "NHWC"]
    dtype: Literal["float32", "uint8"] = "float32"  # uint8: normalisation is folded into the model
    scale: float = Field(1.0, gt=0, description="raw 0..255 pixels are multiplied by this first")
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)  # subtracted after scaling, in color_order
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)  # divided after the mean


class AnchorSpec(_Strict):
    min_sizes: tuple[tuple[int, ...], ...]
    steps: tuple[int, ...]
    variances: tuple[float, float]
    clip: bool = False

    @model_validator(mode="after")
    def _levels_match(self) -> AnchorSpec:
        if len(self.min_sizes) != len(self.steps):
            raise ValueError("anchors.min_sizes and anchors.steps need one entry per level")
        return self


class HeadOutputs(_Strict):
    """Raw per-stride head outputs (Hailo deploy variant): decoding happens on the host."""

    stride: int
    cls: str  # (1, H, W, A*2) logits
    box: str  # (1, H, W, A*4)
    landmarks: str  # (1, H, W, A*10)


class DetectorOutputs(_Strict):
    kind: Literal["decoded", "raw_heads"]
    # kind == "decoded": concatenated over levels, anchors in prior-box order.
    loc: str | None = None  # (1, A, 4)
    conf: str | None = None  # (1, A, 2)
    landmarks: str | None = None  # (1, A, 10)
    conf_is_probability: bool = True  # False: logits, softmax on the host
    # kind == "raw_heads": one entry per stride, in anchor-level order.
    heads: tuple[HeadOutputs, ...] = ()
    heads_layout: Literal["NHWC", "NCHW"] = "NHWC"

    @model_validator(mode="after")
    def _complete(self) -> DetectorOutputs:
        if self.kind == "decoded" and not (self.loc and self.conf and self.landmarks):
            raise ValueError("detector_outputs of kind 'decoded' need loc, conf and landmarks")
        if self.kind == "raw_heads" and not self.heads:
            raise ValueError("detector_outputs of kind 'raw_heads' need heads")
        return self


class QuantInfo(_Strict):
    scale: float
    zero_point: float


class HailoInfo(_Strict):
    arch: Literal["hailo8", "hailo8l", "hailo8r"]
    dfc_version: str
    quant_info: Mapping[str, QuantInfo] = Field(default_factory=dict)


class Provenance(_Strict):
    source: str  # how the weights came to be (pretrained file, distillation run, ...)
    recipe: str  # the command that produced this artifact
    teacher: str | None = None
    data: str | None = None
    created: str | None = None  # ISO date
    git_commit: str | None = None


class Manifest(_Strict):
    schema_version: Literal[1] = 1
    model_id: str
    task: Literal["detector", "classifier"]
    architecture: str
    file: str  # relative to the manifest's directory
    format: Literal["onnx", "hef"]
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size_bytes: int = Field(gt=0)
    opset: int | None = None
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    preprocess: Preprocess
    labels: tuple[str, ...] | None = None  # classifier: the order is the contract with consumers
    classes_file: str | None = None  # classifier: classes.json beside the manifest, must equal labels
    anchors: AnchorSpec | None = None  # detector
    detector_outputs: DetectorOutputs | None = None  # detector
    hailo: HailoInfo | None = None  # format == "hef"
    provenance: Provenance
    licence: str
    metrics: Mapping[str, float | int | str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _task_fields(self) -> Manifest:
        if self.task == "classifier" and not self.labels:
            raise ValueError("a classifier manifest needs labels")
        if self.task == "detector" and (self.anchors is None or self.detector_outputs is None):
            raise ValueError("a detector manifest needs anchors and detector_outputs")
        if self.format == "hef" and self.hailo is None:
            raise ValueError("a hef manifest needs the hailo section")
        return self


@dataclass(frozen=True)
class ModelArtifact:
    manifest: Manifest
    directory: Path

    @property
    def path(self) -> Path:
        return self.directory / self.manifest.file


def manifest_path(location: Path) -> Path:
    """Accept a model directory or the manifest file itself."""
    return location / MANIFEST_NAME if location.is_dir() else location


def load_manifest(location: Path) -> Manifest:
    path = manifest_path(location)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ManifestError(f"{path}: manifest not found") from None
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path}: not valid JSON ({exc})") from None
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(root)"
        raise ManifestError(f"{path}: {where}: {first['msg']}") from None


def load_artifact(location: Path) -> ModelArtifact:
    """Load a manifest and verify the model file (size, sha256) and the classes file against it."""
    path = manifest_path(location)
    manifest = load_manifest(path)
    art = ModelArtifact(manifest, path.parent)
    verify_file(art)
    verify_classes_file(art)
    return art


def verify_file(art: ModelArtifact) -> None:
    m, path = art.manifest, art.path
    if not path.is_file():
        raise ManifestError(f"{m.model_id}: model file {path} is missing")
    size = path.stat().st_size
    if size != m.size_bytes:
        raise ManifestError(f"{m.model_id}: {path.name} is {size} bytes, manifest says {m.size_bytes}")
    digest = sha256_file(path)
    if digest != m.sha256:
        raise ManifestError(f"{m.model_id}: {path.name} sha256 {digest} != manifest {m.sha256}")


def verify_classes_file(art: ModelArtifact) -> None:
    m = art.manifest
    if m.classes_file is None:
        return
    path = art.directory / m.classes_file
    try:
        classes = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{m.model_id}: cannot read {path}: {exc}") from None
    if tuple(classes) != tuple(m.labels or ()):
        raise ManifestError(f"{m.model_id}: {path.name} {classes} differs from manifest labels {list(m.labels or ())}")


def _dims_compatible(declared: tuple[int | str, ...], actual: tuple[int | None, ...]) -> bool:
    if len(declared) != len(actual):
        return False
    for d, a in zip(declared, actual, strict=True):
        if isinstance(d, int) and a is not None and d != a:
            return False
        if isinstance(d, int) and a is None:
            return False  # manifest says fixed, session says dynamic
    return True


def verify_session(m: Manifest, inputs: Mapping[str, TensorSpec], outputs: Mapping[str, TensorSpec]) -> None:
    """Check that a loaded backend session exposes exactly the manifest's I/O (names, ranks, dims, dtypes)."""
    problems: list[str] = []
    for side, declared, actual in (("input", m.inputs, inputs), ("output", m.outputs, outputs)):
        names = {t.name for t in declared}
        if names != set(actual):
            problems.append(f"{side} names: manifest {sorted(names)} vs model {sorted(actual)}")
            continue
        for t in declared:
            spec = actual[t.name]
            if not _dims_compatible(t.shape, spec.shape):
                problems.append(f"{side} {t.name}: manifest shape {list(t.shape)} vs model {list(spec.shape)}")
            if t.dtype != spec.dtype:
                problems.append(f"{side} {t.name}: manifest dtype {t.dtype} vs model {spec.dtype}")
    if problems:
        raise ManifestError(f"{m.model_id}: model does not match its manifest: " + "; ".join(problems))
