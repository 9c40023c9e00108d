"""Frames for benchmarks: a video file, a camera, an image folder, a bundled sample, or ``synthetic:N``.

Frames are decoded up front into a small in-memory set (``max_frames``, cycled during the run) so every
configuration of a ``--compare`` run sees exactly the same images; the per-frame decode time of that pass is
the "capture" stage. ``synthetic:N`` pastes N real face crops (found by the detector in the bundled sample
photos) in a grid onto a bundled landscape photo at 1280x720, with a fixed seed.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from edge_agent.assets import DEFAULT_SAMPLE_VIDEO, fetch
from edge_agent.frames import Detections

log = logging.getLogger(__name__)

UInt8Image = npt.NDArray[np.uint8]
IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
DEFAULT_SOURCE = f"sample:{DEFAULT_SAMPLE_VIDEO}"
SYNTHETIC_FACE_PHOTOS = ("multi_face.jpg", "single_face.jpg", *(f"faceapi_sample{i}.jpg" for i in range(1, 7)))
SYNTHETIC_BACKGROUND = "free-mountain-vector-01.jpg"
SYNTHETIC_SIZE = (1280, 720)


class BenchSourceError(RuntimeError):
    """The benchmark source cannot be opened or yields no frames."""


@dataclass(frozen=True)
class FrameSet:
    source: str
    frames: list[UInt8Image]
    capture_s: list[float]  # decode/grab time of each frame

    @property
    def size(self) -> tuple[int, int]:
        return int(self.frames[0].shape[1]), int(self.frames[0].shape[0])


def _read_capture(cap: cv2.VideoCapture, what: str, max_frames: int) -> FrameSet:
    frames: list[UInt8Image] = []
    times: list[float] = []
    try:
        while len(frames) < max_frames:
            t0 = time.perf_counter()
            ok, img = cap.read()
            dt = time.perf_counter() - t0
            if not ok or img is None:
                break
            frames.append(np.ascontiguousarray(img))
            times.append(dt)
    finally:
        cap.release()
    if not frames:
        raise BenchSourceError(f"{what}: no frames could be read")
    return FrameSet(what, frames, times)


def _read_folder(folder: Path, max_frames: int) -> FrameSet:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS)[:max_frames]
    if not files:
        raise BenchSourceError(f"{folder}: no images ({', '.join(sorted(IMAGE_EXTS))})")
    frames: list[UInt8Image] = []
    times: list[float] = []
    for f in files:
        t0 = time.perf_counter()
        img = cv2.imread(str(f), cv2.IMREAD_COLOR)
        dt = time.perf_counter() - t0
        if img is None:
            log.warning("skipping unreadable image %s", f)
            continue
        frames.append(img)  # type: ignore[arg-type]
        times.append(dt)
    if not frames:
        raise BenchSourceError(f"{folder}: none of the images could be decoded")
    return FrameSet(str(folder), frames, times)


def face_crops(detect: Callable[[UInt8Image], Detections], limit: int = 32) -> list[UInt8Image]:
    """Real face crops (square, 20 % margin) found by ``detect`` in the bundled sample photos."""
    crops: list[UInt8Image] = []
    for name in SYNTHETIC_FACE_PHOTOS:
        img = cv2.imread(str(fetch(name)), cv2.IMREAD_COLOR)
        if img is None:
            continue
        dets = detect(img)  # type: ignore[arg-type]
        for x1, y1, x2, y2 in dets.boxes.tolist():
            side = max(x2 - x1, y2 - y1) * 1.4
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            a, b = int(max(0, cx - side / 2)), int(max(0, cy - side / 2))
            c, d = int(min(img.shape[1], cx + side / 2)), int(min(img.shape[0], cy + side / 2))
            if c - a >= 24 and d - b >= 24:
                crops.append(np.ascontiguousarray(img[b:d, a:c]))
            if len(crops) >= limit:
                return crops
    return crops


def synthetic_frame(crops: list[UInt8Image], n: int, seed: int = 0) -> UInt8Image:
    """A 1280x720 frame with ``n`` face crops pasted in a jittered grid on the bundled landscape photo."""
    w, h = SYNTHETIC_SIZE
    bg = cv2.imread(str(fetch(SYNTHETIC_BACKGROUND)), cv2.IMREAD_COLOR)
    if bg is None:
        raise BenchSourceError(f"cannot decode the bundled background {SYNTHETIC_BACKGROUND}")
    frame = np.ascontiguousarray(cv2.resize(bg, (w, h), interpolation=cv2.INTER_AREA))
    if n == 0:
        return frame  # type: ignore[return-value]
    if not crops:
        raise BenchSourceError("synthetic source: the detector found no faces in the bundled sample photos")
    rng = np.random.default_rng(seed)
    cols = math.ceil(math.sqrt(n * w / h))
    rows = math.ceil(n / cols)
    cell = min(w // cols, h // rows)
    for k in range(n):
        r, c = divmod(k, cols)
        side = int(cell * rng.uniform(0.6, 0.9))
        face = cv2.resize(crops[k % len(crops)], (side, side), interpolation=cv2.INTER_AREA)
        x = c * (w // cols) + int(rng.uniform(0, max(1, w // cols - side)))
        y = r * (h // rows) + int(rng.uniform(0, max(1, h // rows - side)))
        frame[y:y + side, x:x + side] = face
    return frame  # type: ignore[return-value]


def load_frames(
    source: str,
    max_frames: int = 64,
    detect: Callable[[UInt8Image], Detections] | None = None,
) -> FrameSet:
    """Decode up to ``max_frames`` frames of ``source`` (see the module docstring for the accepted forms)."""
    if max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    if source.startswith("synthetic:"):
        try:
            n = int(source.split(":", 1)[1])
        except ValueError:
            raise BenchSourceError(f"{source!r}: expected synthetic:N with N faces, e.g. synthetic:4") from None
        if not 0 <= n <= 64:
            raise BenchSourceError(f"{source!r}: N must be 0..64")
        if detect is None and n > 0:
            raise BenchSourceError("synthetic:N needs a detector to find real face crops")
        crops = face_crops(detect, limit=max(n, 1)) if detect is not None and n > 0 else []
        t0 = time.perf_counter()
        frame = synthetic_frame(crops, n)
        return FrameSet(source, [frame], [time.perf_counter() - t0])
    if source.startswith("sample:"):
        path = fetch(source.split(":", 1)[1])
        return _read_capture(cv2.VideoCapture(str(path)), source, max_frames) if path.suffix.lower() in {
            ".mp4", ".mov", ".avi", ".mkv"} else _read_folder_file(path)
    if source.isdigit() or source.startswith("/dev/video"):
        cap = cv2.VideoCapture(int(source) if source.isdigit() else source)
        if not cap.isOpened():
            raise BenchSourceError(f"camera {source}: cannot be opened (is it connected and free?)")
        return _read_capture(cap, f"camera {source}", max_frames)
    path = Path(source)
    if path.is_dir():
        return _read_folder(path, max_frames)
    if path.is_file():
        if path.suffix.lower() in IMAGE_EXTS:
            return _read_folder_file(path)
        cap = cv2.VideoCapture(str(path))
        if not cap.isOpened():
            raise BenchSourceError(f"{path}: OpenCV cannot open this video")
        return _read_capture(cap, str(path), max_frames)
    raise BenchSourceError(
        f"{source!r}: not a file, folder, camera index/device or sample:NAME/synthetic:N source"
    )


def _read_folder_file(path: Path) -> FrameSet:
    t0 = time.perf_counter()
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    dt = time.perf_counter() - t0
    if img is None:
        raise BenchSourceError(f"{path}: cannot decode this image")
    return FrameSet(str(path), [img], [dt])  # type: ignore[list-item]
