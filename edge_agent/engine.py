"""The inference engine: both models loaded on one backend kind, chosen once at start-up.

``build_engine(settings)`` loads the two artifacts (manifest + sha256 + classes file), chooses the backend and
opens a session per model (each checked against its manifest by the detector/classifier constructors):

* ``backend.kind = "onnx"``: ONNX Runtime on the CPU with the ``detector.model`` / ``classifier.model`` artifacts;
* ``"hailo"``: the Hailo device with the ``*.hailo_model`` HEF artifacts, never falling back to ONNX;
* ``"auto"``: Hailo if :func:`edge_agent.backends.hailo.probe` succeeds, else ONNX; the log says which and why.

``edge_agent.backends.hailo`` (and so HailoRT) is imported only when Hailo is asked for or probed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from edge_agent.backends.base import Backend, BackendError
from edge_agent.classifier import ExpressionClassifier
from edge_agent.detector import FaceDetector
from edge_agent.fastpath import check_detector, fast_config
from edge_agent.frames import Detections
from edge_agent.manifest import ManifestError, ModelArtifact, load_artifact
from edge_agent.settings import Settings

log = logging.getLogger(__name__)

BackendKind = Literal["onnx", "hailo"]
Prober = Callable[[], tuple[bool, str]]


def choose_backend(kind: str, probe: Prober) -> tuple[BackendKind, str]:
    """Resolve ``backend.kind`` to the backend to use and the reason (``probe`` is called only for "auto")."""
    if kind == "onnx":
        return "onnx", "backend.kind=onnx (configured)"
    if kind == "hailo":
        return "hailo", "backend.kind=hailo (configured; no fallback)"
    if kind != "auto":
        raise ValueError(f"backend.kind must be auto, onnx or hailo, got {kind!r}")
    ok, reason = probe()
    if ok:
        return "hailo", f"backend.kind=auto: {reason}"
    return "onnx", f"backend.kind=auto: Hailo unavailable ({reason}); using ONNX Runtime on the CPU"


def _hailo_probe(settings: Settings) -> Prober:
    def probe() -> tuple[bool, str]:
        from edge_agent.backends.hailo import probe as hailo_probe

        return hailo_probe(settings.backend.hailo)

    return probe


def model_dirs(settings: Settings, kind: BackendKind) -> dict[str, Path]:
    """The artifact locations for ``kind``: ONNX models or the Hailo HEFs."""
    if kind == "hailo":
        return {"detector": settings.detector.hailo_model, "classifier": settings.classifier.hailo_model}
    return {"detector": settings.detector.model, "classifier": settings.classifier.model}


def _load(task: str, location: Path) -> ModelArtifact:
    try:
        art = load_artifact(location)
    except ManifestError as exc:
        raise ManifestError(f"{task} model: {exc}") from None
    if art.manifest.task != task:
        raise ManifestError(f"{task} model {location}: the manifest is for a {art.manifest.task}")
    return art


@dataclass
class Engine:
    """A detector and a classifier on the same backend kind. ``close()`` releases sessions and the device."""

    detector: FaceDetector
    classifier: ExpressionClassifier
    backend_kind: str
    backend_reason: str
    model_ids: dict[str, str]
    _closers: list[Callable[[], None]] = field(default_factory=list, repr=False)

    def warm_up(self) -> None:
        """Run both models once (first-run allocations and graph setup happen here, not on the first frame)."""
        w, h = self.detector.input_wh
        image = np.full((h, w, 3), 127, np.uint8)
        self.detector.detect(image)
        side = min(w, h) / 2.0
        x1, y1 = (w - side) / 2.0, (h - side) / 2.0
        box = np.array([[x1, y1, x1 + side, y1 + side]], np.float32)
        rel = np.array([[0.3, 0.4], [0.7, 0.4], [0.5, 0.6], [0.35, 0.8], [0.65, 0.8]], np.float32)
        landmarks = (np.array([x1, y1], np.float32) + rel * side)[None]
        dets = Detections(boxes=box, scores=np.ones((1,), np.float32), landmarks=landmarks)
        self.classifier.classify(image, dets)
        log.info("warm-up done (%s: %s + %s)", self.backend_kind, self.model_ids["detector"],
                 self.model_ids["classifier"])

    def close(self) -> None:
        closers, self._closers = self._closers, []
        for close in reversed(closers):
            try:
                close()
            except Exception:
                log.exception("error while releasing an inference backend")


def fixed_batch(art: ModelArtifact) -> bool:
    """True when the model's first input has a fixed batch size (ONNX Runtime's memory pattern pays off)."""
    return isinstance(art.manifest.inputs[0].shape[0], int)


def _open_models(
    settings: Settings, kind: BackendKind, open_backend: Callable[[ModelArtifact], Backend],
    closers: list[Callable[[], None]],
) -> tuple[FaceDetector, ExpressionClassifier, dict[str, str]]:
    dirs = model_dirs(settings, kind)
    det_art = _load("detector", dirs["detector"])
    cls_art = _load("classifier", dirs["classifier"])
    d, c = settings.detector, settings.classifier
    size = (d.input_width, d.input_height) if d.input_width and d.input_height else None
    if (d.input_width is None) != (d.input_height is None):
        raise ManifestError("detector.input_width and detector.input_height must be set together (or neither)")
    det_backend = open_backend(det_art)
    closers.append(det_backend.close)
    cls_backend = open_backend(cls_art)
    closers.append(cls_backend.close)
    try:
        detector = FaceDetector(det_art, det_backend, score_threshold=d.score_threshold, nms_iou=d.nms_iou,
                                input_size=size, top_k=d.top_k, max_faces=d.max_faces)
        classifier = ExpressionClassifier(cls_art, cls_backend, margin=c.margin, align=c.align,
                                          max_batch=c.max_batch)
        if (fast := fast_config(d)) is not None:
            check_detector(detector, fast)  # detector.mode fast needs a dynamic-size model
    except ValueError as exc:  # the manifest and the settings/model disagree
        raise ManifestError(str(exc)) from None
    ids = {"detector": det_art.manifest.model_id, "classifier": cls_art.manifest.model_id}
    return detector, classifier, ids


def build_engine(settings: Settings, *, probe: Prober | None = None) -> Engine:
    """Load both models on the chosen backend. Raises ManifestError or BackendError (nothing half-open is left)."""
    kind, reason = choose_backend(settings.backend.kind, probe or _hailo_probe(settings))
    log.info("backend %s: %s", kind, reason)
    closers: list[Callable[[], None]] = []
    try:
        if kind == "hailo":
            from edge_agent.backends.hailo import HailoDevice

            device = HailoDevice.open(settings.backend.hailo)
            closers.append(device.close)
            detector, classifier, ids = _open_models(settings, kind, device.load, closers)
        else:
            from edge_agent.backends.onnx import OnnxBackend

            o = settings.backend.onnx

            def open_onnx(art: ModelArtifact) -> Backend:
                if art.manifest.format != "onnx":
                    raise ManifestError(f"{art.manifest.model_id}: backend onnx needs an .onnx artifact, "
                                        f"{art.directory} holds {art.manifest.format}")
                return OnnxBackend(art.path, intra_op_threads=o.intra_op_threads,
                                   inter_op_threads=o.inter_op_threads,
                                   graph_optimization=o.graph_optimization, spin=o.spin,
                                   mem_pattern=fixed_batch(art))

            detector, classifier, ids = _open_models(settings, kind, open_onnx, closers)
    except BaseException:
        for close in reversed(closers):
            try:
                close()
            except Exception:
                log.exception("error while releasing a backend after a failed start")
        raise
    return Engine(detector, classifier, kind, reason, ids, closers)


@dataclass(frozen=True)
class ModelCheck:
    task: str
    location: Path
    ok: bool
    detail: str  # model id, format and I/O on success; the problem otherwise


def check_models(settings: Settings, *, probe: Prober | None = None) -> list[ModelCheck]:
    """For ``check-config``: load each model on the backend the daemon would use and report per model.

    Each check covers the manifest, the file's size and sha256, the classes file, a session opening, and the
    session's inputs/outputs against the manifest. Never raises for model problems; they are in the results.
    """
    try:
        kind, reason = choose_backend(settings.backend.kind, probe or _hailo_probe(settings))
    except BackendError as exc:
        return [ModelCheck(t, p, False, f"backend: {exc}") for t, p in model_dirs(settings, "onnx").items()]
    log.info("checking models for backend %s (%s)", kind, reason)
    results: list[ModelCheck] = []
    device = None
    if kind == "hailo":
        from edge_agent.backends.hailo import HailoDevice

        try:
            device = HailoDevice.open(settings.backend.hailo)
        except BackendError as exc:
            return [ModelCheck(t, p, False, f"Hailo device: {exc}") for t, p in model_dirs(settings, kind).items()]
    try:
        for task, location in model_dirs(settings, kind).items():
            results.append(_check_one(settings, kind, task, location, device))
    finally:
        if device is not None:
            device.close()
    return results


def _check_one(settings: Settings, kind: BackendKind, task: str, location: Path, device: object) -> ModelCheck:
    backend: Backend | None = None
    try:
        art = _load(task, location)
        if kind == "hailo":
            from edge_agent.backends.hailo import HailoDevice

            assert isinstance(device, HailoDevice)
            backend = device.load(art)
        else:
            from edge_agent.backends.onnx import OnnxBackend

            if art.manifest.format != "onnx":
                raise ManifestError(f"backend onnx needs an .onnx artifact, {location} holds {art.manifest.format}")
            backend = OnnxBackend(art.path, intra_op_threads=1, inter_op_threads=1)
        if task == "detector":
            detector = FaceDetector(art, backend)
            if (fast := fast_config(settings.detector)) is not None:
                check_detector(detector, fast)  # detector.mode fast needs a dynamic-size model
        else:
            ExpressionClassifier(art, backend)
        m = art.manifest
        ins = ", ".join(f"{t.name}{list(t.shape)}" for t in m.inputs)
        return ModelCheck(task, location, True, f"{m.model_id} ({m.format}, {m.architecture}) inputs {ins}; "
                                                f"sha256 and session I/O match the manifest")
    except (ManifestError, BackendError, ValueError) as exc:
        return ModelCheck(task, location, False, str(exc))
    finally:
        if backend is not None:
            backend.close()
