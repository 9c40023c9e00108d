"""What one benchmark configuration is, and how it is loaded into something that processes a frame.

A configuration is named by ``key=value`` pairs over the command-line flags (``--compare`` syntax):
``detector=DIR``, ``classifier=DIR``, ``backend=onnx|hailo``, ``threads=N``, ``input_size=WxH``,
``pipeline=edge|reference``, ``score_threshold=F``, ``nms_iou=F``, ``margin=F``, ``align=true|false``,
``max_batch=N``, and fast detection mode: ``mode=full|fast``, ``full_every=N``, ``roi_expand=F``, ``roi_size=N``,
``full_size=fixed|auto`` (each may also be written with a ``detector.`` prefix, as in the settings:
``detector.mode=fast``), and ``detect_workers=N`` (``pipeline.detect_workers``: detector threads of the pipelined
daemon run; the in-process sequential run has one); several pairs are separated by commas:
``"detector=models/detector/acwface-dcn,threads=2"``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from edge_agent.backends.base import Backend
from edge_agent.classifier import ExpressionClassifier
from edge_agent.detector import FaceDetector
from edge_agent.fastpath import FastConfig, FrameDetector, ScheduledDetector, frame_detector, warm_up_frame_detector
from edge_agent.frames import Detections, Expressions, UInt8Image
from edge_agent.manifest import ModelArtifact, load_artifact
from edge_agent.settings import ClassifierSettings, DetectorSettings

log = logging.getLogger(__name__)

_DET = DetectorSettings()
_CLS = ClassifierSettings()


class ConfigSpecError(ValueError):
    """A ``--compare`` configuration string is malformed."""


@dataclass(frozen=True)
class BenchConfig:
    detector: Path = field(default_factory=lambda: Path(DetectorSettings().model))
    classifier: Path = field(default_factory=lambda: Path(ClassifierSettings().model))
    backend: str = "onnx"
    threads: int = 1
    input_size: tuple[int, int] | None = None
    pipeline: str = "edge"  # "edge" (the daemon's code) or "reference" (reference.py)
    score_threshold: float = _DET.score_threshold
    nms_iou: float = _DET.nms_iou
    margin: float = _CLS.margin
    align: bool = _CLS.align
    max_batch: int = _CLS.max_batch
    mode: str = _DET.mode  # detector.mode: "full" or "fast" (edge_agent.fastpath)
    full_every: int = _DET.full_every
    roi_expand: float = _DET.roi_expand
    roi_size: int = _DET.roi_size
    full_size: str = _DET.full_size
    detect_workers: int = 1  # pipeline.detect_workers of the pipelined daemon run

    def __post_init__(self) -> None:
        if not 1 <= self.detect_workers <= 4:
            raise ConfigSpecError(f"detect_workers must be 1..4, got {self.detect_workers}")
        if self.detect_workers > 1 and (self.mode == "fast" or self.pipeline == "reference"):
            raise ConfigSpecError("detect_workers > 1 needs mode=full and pipeline=edge")
        if self.mode not in ("full", "fast"):
            raise ConfigSpecError(f"mode must be full or fast, got {self.mode!r}")
        if self.full_size not in ("fixed", "auto"):
            raise ConfigSpecError(f"full_size must be fixed or auto, got {self.full_size!r}")
        if self.mode == "fast" and self.pipeline == "reference":
            raise ConfigSpecError("the reference pipeline has no fast mode (mode=fast needs pipeline=edge)")
        if self.backend not in ("onnx", "hailo"):
            raise ConfigSpecError(f"backend must be onnx or hailo, got {self.backend!r}")
        if self.pipeline not in ("edge", "reference"):
            raise ConfigSpecError(f"pipeline must be edge or reference, got {self.pipeline!r}")
        if self.threads < 0:
            raise ConfigSpecError(f"threads must be >= 0 (0 = onnxruntime default), got {self.threads}")
        if self.pipeline == "reference" and self.backend != "onnx":
            raise ConfigSpecError("the reference pipeline runs on ONNX Runtime only (backend=onnx)")

    def name(self) -> str:
        """Short, file-name-safe description: detector model, classifier model, backend, threads, size."""
        size = f"_{self.input_size[0]}x{self.input_size[1]}" if self.input_size else ""
        ref = "_reference" if self.pipeline == "reference" else ""
        fast = ""
        if self.mode == "fast":
            auto = "_auto" if self.full_size == "auto" else ""
            fast = f"_fast-n{self.full_every}-r{self.roi_size}-x{self.roi_expand:g}{auto}"
        workers = f"_w{self.detect_workers}" if self.detect_workers > 1 else ""
        return f"{self.detector.name}+{self.classifier.name}_{self.backend}_t{self.threads}{size}{ref}{fast}{workers}"

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["detector"] = str(self.detector)
        d["classifier"] = str(self.classifier)
        d["input_size"] = list(self.input_size) if self.input_size else None
        return d


def parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ConfigSpecError(f"size {text!r}: expected WxH, e.g. 640x384") from None
    if w <= 0 or h <= 0:
        raise ConfigSpecError(f"size {text!r}: width and height must be positive")
    return w, h


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigSpecError(f"{text!r} is not a boolean (true/false)")


_CONVERT: dict[str, Callable[[str], Any]] = {
    "detector": Path,
    "classifier": Path,
    "backend": str,
    "threads": int,
    "input_size": parse_size,
    "pipeline": str,
    "score_threshold": float,
    "nms_iou": float,
    "margin": float,
    "align": _parse_bool,
    "max_batch": int,
    "mode": str,
    "full_every": int,
    "roi_expand": float,
    "roi_size": int,
    "full_size": str,
    "detect_workers": int,
}


def apply_spec(base: BenchConfig, spec: str) -> BenchConfig:
    """``base`` with the ``key=value[,key=value]`` pairs of ``spec`` applied."""
    changes: dict[str, Any] = {}
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        key, sep, value = part.partition("=")
        key = key.strip().replace("-", "_")
        for prefix in ("detector.", "pipeline."):
            if key.startswith(prefix) and key.removeprefix(prefix) in _CONVERT:
                key = key.removeprefix(prefix)
        if not sep or key not in _CONVERT:
            raise ConfigSpecError(
                f"{part!r}: expected key=value with key one of {', '.join(_CONVERT)} (e.g. threads=2)"
            )
        try:
            changes[key] = _CONVERT[key](value.strip())
        except ValueError as exc:
            raise ConfigSpecError(f"{part!r}: {exc}") from None
    return dataclasses.replace(base, **changes)


FrameTimes = dict[str, float]


class FrameProcessor(Protocol):
    """Detector + classifier for one configuration: frame -> detections, expressions and stage seconds."""

    labels: tuple[str, ...]
    detector_artifact: ModelArtifact
    classifier_artifact: ModelArtifact
    detector_input_wh: tuple[int, int] | None  # None: follows the frame (native resolution)

    def process(self, image: UInt8Image) -> tuple[Detections, Expressions, FrameTimes]: ...

    def detect(self, image: UInt8Image) -> Detections: ...

    def close(self) -> None: ...


class EdgeProcessor:
    """The daemon's own FaceDetector + ExpressionClassifier on ONNX Runtime or Hailo."""

    def __init__(self, cfg: BenchConfig) -> None:
        self.detector_artifact = load_artifact(cfg.detector)
        self.classifier_artifact = load_artifact(cfg.classifier)
        self._closers: list[Callable[[], None]] = []
        det_backend, cls_backend = self._backends(cfg)
        self.detector = FaceDetector(
            self.detector_artifact, det_backend, score_threshold=cfg.score_threshold, nms_iou=cfg.nms_iou,
            input_size=cfg.input_size,
        )
        self.classifier = ExpressionClassifier(
            self.classifier_artifact, cls_backend, margin=cfg.margin, align=cfg.align, max_batch=cfg.max_batch
        )
        self.labels = self.classifier.labels
        self.detector_input_wh: tuple[int, int] | None = self.detector.input_wh
        fast = fast_config_of(cfg)
        self.frame_detector: FrameDetector = frame_detector(self.detector, fast)
        warm_up_frame_detector(self.frame_detector)

    def _backends(self, cfg: BenchConfig) -> tuple[Backend, Backend]:
        if cfg.backend == "hailo":
            from edge_agent.backends.hailo import HailoDevice
            from edge_agent.settings import HailoSettings

            device = HailoDevice.open(HailoSettings())
            self._closers.append(device.close)
            return device.load(self.detector_artifact), device.load(self.classifier_artifact)
        from edge_agent.backends.onnx import OnnxBackend
        from edge_agent.engine import fixed_batch

        det = OnnxBackend(self.detector_artifact.path, intra_op_threads=cfg.threads, inter_op_threads=1,
                          mem_pattern=fixed_batch(self.detector_artifact))
        cls = OnnxBackend(self.classifier_artifact.path, intra_op_threads=cfg.threads, inter_op_threads=1,
                          mem_pattern=fixed_batch(self.classifier_artifact))
        self._closers += [det.close, cls.close]
        return det, cls

    def detect(self, image: UInt8Image) -> Detections:
        return self.detector.detect(image)  # always the whole frame (used to pick frames, never timed)

    def plan_counts(self) -> dict[str, object] | None:
        """Fast mode: how many frames took each detection plan so far (None in full mode)."""
        fd = self.frame_detector
        return fd.counts.as_dict() if isinstance(fd, ScheduledDetector) else None

    def process(self, image: UInt8Image) -> tuple[Detections, Expressions, FrameTimes]:
        dets, t_det = self.frame_detector.detect_timed(image)
        exprs, t_cls = self.classifier.classify_timed(image, dets)
        return dets, exprs, {**t_det, **t_cls}

    def close(self) -> None:
        for c in reversed(self._closers):
            c()
        self._closers.clear()


def fast_config_of(cfg: BenchConfig) -> FastConfig | None:
    """The fast-mode configuration of a bench config (None for mode=full)."""
    if cfg.mode == "full":
        return None
    return FastConfig(full_every=cfg.full_every, roi_expand=cfg.roi_expand, roi_size=cfg.roi_size,
                      full_size="auto" if cfg.full_size == "auto" else "fixed")


def load_processor(cfg: BenchConfig) -> FrameProcessor:
    if cfg.pipeline == "reference":
        from edge_agent.bench.reference import ReferencePipeline

        return ReferencePipeline(cfg)
    return EdgeProcessor(cfg)
