"""End-to-end frame rate and capture->publish latency of the real, pipelined daemon (edge_agent.pipeline).

The daemon runs with the benchmark's configuration on the same source (file sources at ``pace=fast`` and
looping), publishing on a loopback TCP port; a subscriber counts the emotion messages and reads each one's
``latency_ms`` (capture -> start of publish on the daemon's monotonic clock). The first second is not counted.
The daemon's own status snapshot at the end (drops, per-stage and ``end_to_end`` percentiles, which include the
send) is stored beside the figures.

A single photo (``sample:multi_face.jpg`` or an image file) is played to the daemon as an image folder of
``PHOTO_COPIES`` links to it, looping (the capture thread decodes the JPEG for every frame, as it would for a
camera's MJPEG); at native pace the folder plays at ``PHOTO_FPS``.
"""

from __future__ import annotations

import logging
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import zmq

from edge_agent.bench.runner import BenchConfig
from edge_agent.messages import EMOTION_TOPIC_PREFIX, EmotionMessage, decode
from edge_agent.stats import percentiles_ms

log = logging.getLogger(__name__)

SETTLE_S = 1.0
PHOTO_COPIES = 100
PHOTO_FPS = 30.0
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def daemon_source(source: str) -> str | None:
    """The daemon's source URI for a bench source, or None when the daemon cannot read it (synthetic:N)."""
    if source.startswith("synthetic:"):
        return None
    return source


def photo_path(source: str) -> Path | None:
    """The image file a bench source names (``sample:NAME.jpg`` or a path), or None for other sources."""
    if source.startswith("sample:"):
        name = source.split(":", 1)[1]
        if not name.lower().endswith(_IMAGE_SUFFIXES):
            return None
        from edge_agent.assets import fetch

        return fetch(name)
    path = Path(source)
    return path if path.suffix.lower() in _IMAGE_SUFFIXES and path.is_file() else None


def photo_folder(photo: Path, folder: Path, copies: int = PHOTO_COPIES) -> Path:
    """Fill ``folder`` with ``copies`` symbolic links to ``photo`` (an image-folder source repeating it)."""
    if copies < 1:
        raise ValueError(f"copies must be >= 1, got {copies}")
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(copies):
        (folder / f"{i:05d}{photo.suffix.lower()}").symlink_to(photo.resolve())
    return folder


def overrides_for(cfg: BenchConfig, source_uri: str, endpoint: str) -> dict[str, Any]:
    o: dict[str, Any] = {
        "source.uri": source_uri,
        "source.pace": "fast",
        "source.loop": True,
        "backend.kind": cfg.backend,
        "backend.onnx.intra_op_threads": cfg.threads,
        "detector.score_threshold": cfg.score_threshold,
        "detector.nms_iou": cfg.nms_iou,
        "classifier.margin": cfg.margin,
        "classifier.align": cfg.align,
        "classifier.max_batch": cfg.max_batch,
        "detector.mode": cfg.mode,
        "detector.full_every": cfg.full_every,
        "detector.roi_expand": cfg.roi_expand,
        "detector.roi_size": cfg.roi_size,
        "detector.full_size": cfg.full_size,
        "pipeline.detect_workers": cfg.detect_workers,
        "publisher.endpoint": endpoint,
        "publisher.camera_id": "bench",
    }
    key = "hailo_model" if cfg.backend == "hailo" else "model"
    o[f"detector.{key}"] = str(cfg.detector)
    o[f"classifier.{key}"] = str(cfg.classifier)
    if cfg.input_size:
        o["detector.input_width"], o["detector.input_height"] = cfg.input_size
    return o


def _run_once(cfg: BenchConfig, uri: str, seconds: float, pace: str,
              extra: dict[str, Any] | None = None) -> dict[str, Any]:
    from edge_agent.pipeline import Pipeline
    from edge_agent.settings import load_settings

    endpoint = f"tcp://127.0.0.1:{_free_port()}"
    with tempfile.TemporaryDirectory() as tmp:
        empty = Path(tmp) / "bench.toml"
        empty.write_text("", encoding="utf-8")
        settings = load_settings(empty, {**overrides_for(cfg, uri, endpoint), "source.pace": pace, **(extra or {})})
    pipe = Pipeline.from_settings(settings)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, EMOTION_TOPIC_PREFIX.encode())
    sub.setsockopt(zmq.RCVHWM, 100000)
    latencies: list[float] = []
    faces: list[int] = []
    counted = 0
    try:
        pipe.warm_up()
        sub.connect(endpoint)
        pipe.start()
        t_count = time.monotonic() + SETTLE_S
        t_end = t_count + seconds
        while (now := time.monotonic()) < t_end:
            if pipe.health().error is not None:
                raise RuntimeError(f"the pipeline failed during the benchmark: {pipe.health().error}")
            if not sub.poll(int(max(1, min(0.5, t_end - now) * 1000))):
                continue
            topic, payload = sub.recv_multipart()
            if time.monotonic() < t_count:
                continue
            msg = decode(topic, payload)
            if isinstance(msg, EmotionMessage):
                counted += 1
                latencies.append(msg.latency_ms / 1000.0)
                faces.append(len(msg.faces))
        elapsed = time.monotonic() - t_count
        stats = pipe.stats()
    finally:
        pipe.stop()
        sub.close(linger=0)
    return {
        "pace": pace,
        "fps": round(counted / elapsed, 3) if counted else 0.0,
        "messages": counted,
        "seconds": round(elapsed, 3),
        "latency_ms": percentiles_ms(latencies),
        "faces_per_frame": round(sum(faces) / len(faces), 3) if faces else 0.0,
        "daemon_stats": {k: stats.get(k) for k in ("frames_captured", "frames_published", "drops", "publish_drops",
                                                   "latency_ms", "backend", "backend_reason")},
    }


def run_pipelined(cfg: BenchConfig, source: str, seconds: float) -> dict[str, Any]:
    """Throughput (``pace=fast``: frames as fast as the daemon takes them) and latency (``pace=native``: the
    file's own frame rate, as a camera would deliver) of the daemon, ``seconds`` each.

    Returns {"fps", "latency_ms": {p50,p95,p99} (native pace), "throughput_run", "latency_run", "source"}
    or {"skipped": reason}. Cameras have no pace: one run gives both figures.
    """
    if seconds <= 0:
        return {"skipped": "--pipeline-seconds 0"}
    if cfg.pipeline == "reference":
        return {"skipped": "the reference pipeline has no daemon form"}
    uri = daemon_source(source)
    if uri is None:
        return {"skipped": f"{source} is generated in memory; the daemon cannot read it"}
    try:
        import edge_agent.pipeline  # noqa: F401
    except ImportError as exc:
        return {"skipped": f"edge_agent.pipeline is not available ({exc})"}
    photo = photo_path(source)
    if photo is None:
        return _run_both(cfg, uri, seconds)
    with tempfile.TemporaryDirectory(prefix="edge-bench-photo-") as tmp:
        folder = photo_folder(photo, Path(tmp) / "frames")
        out = _run_both(cfg, str(folder), seconds, {"source.folder_fps": PHOTO_FPS})
    if "source" in out:
        out["source"] = f"{source} x {PHOTO_COPIES} (image folder, looping; native pace {PHOTO_FPS:g} fps)"
    return out


def _run_both(cfg: BenchConfig, uri: str, seconds: float, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    fast = _run_once(cfg, uri, seconds, "fast", extra)
    if fast["messages"] == 0:
        return {"skipped": "no emotion message arrived from the daemon", "throughput_run": fast}
    live = fast if uri.isdigit() or uri.startswith("/dev/video") else _run_once(cfg, uri, seconds, "native", extra)
    return {
        "fps": fast["fps"],
        "latency_ms": live["latency_ms"],
        "latency_pace": live["pace"],
        "faces_per_frame": fast["faces_per_frame"],
        "source": uri,
        "throughput_run": fast,
        "latency_run": live,
    }
