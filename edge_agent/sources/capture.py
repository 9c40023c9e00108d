"""Blocking frame readers: OpenCV ``VideoCapture`` (cameras, V4L2 nodes, network streams, video files) and image
folders. One ``read()`` returns one BGR frame or None (end of file, or a live source that failed). Threading,
pacing, queueing and reconnection live in :mod:`edge_agent.sources.threaded`.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from edge_agent.errors import SourceError
from edge_agent.frames import UInt8Image
from edge_agent.settings import SourceSettings
from edge_agent.sources.uri import IMAGE_SUFFIXES, SourceSpec

log = logging.getLogger(__name__)

FALLBACK_FILE_FPS = 25.0
FFMPEG_OPTIONS_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
# OpenCV's V4L2 backend ignores CAP_PROP_READ_TIMEOUT_MSEC; its wait for a frame is select() with this many
# whole seconds (default 10), read once per process at the first frame grab.
V4L_SELECT_TIMEOUT_ENV = "OPENCV_VIDEOIO_V4L_SELECT_TIMEOUT"
# A video file whose read fails before its last frame (corrupt packets: each failed read consumes one) is read
# again up to this many times in a row before the failure is taken as the end of the file.
FILE_READ_RETRIES = 256


class VideoCaptureLike(Protocol):
    """The subset of ``cv2.VideoCapture`` used here (test fakes implement exactly this)."""

    def isOpened(self) -> bool: ...

    def read(self) -> tuple[bool, Any]: ...

    def set(self, prop: int, value: float) -> bool: ...

    def get(self, prop: int) -> float: ...

    def release(self) -> None: ...


# cv2.VideoCapture(target, apiPreference, params)
VideoCaptureFactory = Callable[[str | int, int, Sequence[int]], VideoCaptureLike]


def _opencv_factory(target: str | int, api: int, params: Sequence[int]) -> VideoCaptureLike:
    cap: VideoCaptureLike = cv2.VideoCapture(target, api, list(params))
    return cap


class Capture(Protocol):
    spec: SourceSpec

    @property
    def fps(self) -> float:
        """The native frame rate used for pacing file and folder sources."""
        ...

    def open(self) -> None:
        """Open (or reopen) the source; raises SourceError naming the source and the cause."""
        ...

    def read(self) -> tuple[UInt8Image, int] | None:
        """The next (BGR image, frame_id), or None at the end of a file or when a live source failed."""
        ...

    def close(self) -> None: ...


def as_bgr(image: np.ndarray) -> UInt8Image:
    """Make any decoded frame HxWx3 uint8 BGR and contiguous (grey and BGRA frames are converted)."""
    if image.dtype != np.uint8:
        raise SourceError(f"frame has dtype {image.dtype}, expected uint8")
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    elif image.ndim != 3 or image.shape[2] != 3:
        raise SourceError(f"frame has shape {image.shape}, expected HxWx3")
    return np.ascontiguousarray(image)


def ffmpeg_capture_options(settings: SourceSettings) -> str:
    """``OPENCV_FFMPEG_CAPTURE_OPTIONS`` for low-latency network streams (key;value pairs joined by '|')."""
    opts = [
        f"rtsp_transport;{settings.rtsp_transport}",
        "fflags;nobuffer",
        "flags;low_delay",
        "max_delay;500000",  # microseconds of demuxer buffering at most
        "reorder_queue_size;0",
    ]
    return "|".join(opts)


@contextmanager
def _environ(name: str, value: str) -> Iterator[None]:
    """Set an environment variable for the duration of the block, then restore its previous state."""
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


class OpenCvCapture:
    """A camera index, V4L2 node, network stream or video file through ``cv2.VideoCapture``."""

    def __init__(
        self, spec: SourceSpec, settings: SourceSettings, factory: VideoCaptureFactory = _opencv_factory
    ) -> None:
        if spec.kind == "folder":
            raise ValueError("OpenCvCapture does not read image folders; use FolderCapture")
        self.spec = spec
        self._settings = settings
        self._factory = factory
        self._cap: VideoCaptureLike | None = None
        self._fps = FALLBACK_FILE_FPS
        self._index = 0
        self._pending: UInt8Image | None = None  # a file's first frame, decoded during open()
        self._frame_count = 0.0  # a file's reported frame count (0 when unknown)
        self.corrupt_reads = 0  # failed reads of a file that were skipped (corrupt or undecodable packets)
        self._short_end_logged = False

    @property
    def fps(self) -> float:
        return self._fps

    def _timeouts(self) -> list[int]:
        s = self._settings
        return [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, round(s.open_timeout_s * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC, round(s.read_timeout_s * 1000),
        ]

    def open(self) -> None:
        self.close()
        spec, s = self.spec, self._settings
        if spec.kind == "stream":
            # Read by the FFmpeg backend when the capture is created, so it must be set before opening; it is
            # process-wide, so it is restored right after (these flags would break decoding of video files).
            with _environ(FFMPEG_OPTIONS_ENV, ffmpeg_capture_options(s)):
                cap = self._factory(spec.target, cv2.CAP_FFMPEG, self._timeouts())
        elif spec.kind in ("device", "v4l2"):
            if sys.platform.startswith("linux"):
                api = cv2.CAP_V4L2
                # V4L2 takes no timeout parameters at open; its read timeout comes from the environment.
                os.environ.setdefault(V4L_SELECT_TIMEOUT_ENV, str(max(1, math.ceil(s.read_timeout_s))))
                cap = self._factory(spec.target, api, [])
            else:
                cap = self._factory(spec.target, cv2.CAP_ANY, self._timeouts())
        else:
            cap = self._factory(spec.target, cv2.CAP_ANY, [])
        if not cap.isOpened():
            cap.release()
            raise SourceError(self._open_failure())
        self._cap = cap
        self._index = 0
        if spec.kind in ("device", "v4l2"):
            self._configure_camera(cap)
        if spec.kind == "stream":
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        if spec.kind == "file":
            fps = cap.get(cv2.CAP_PROP_FPS)
            if not math.isfinite(fps) or fps <= 0 or fps > 1000:
                log.warning("%s: the file reports no usable frame rate (%s); pacing at %.0f fps "
                            "(set source.pace=fast to play as fast as processed)", spec.display, fps,
                            FALLBACK_FILE_FPS)
                fps = FALLBACK_FILE_FPS
            self._fps = float(fps)
            count = cap.get(cv2.CAP_PROP_FRAME_COUNT)
            self._frame_count = float(count) if math.isfinite(count) and count > 0 else 0.0
            first = self._read_raw()
            if first is None:
                self.close()
                raise SourceError(f"video file {spec.display}: opened but no frame could be decoded "
                                  "(corrupt file or unsupported codec)")
            self._pending = first
        log.info("opened %s (%s)", spec.display, spec.kind)

    def _open_failure(self) -> str:
        spec = self.spec
        if spec.kind == "file":
            return (f"video file {spec.display}: cannot be opened (not a video, or a codec this OpenCV/FFmpeg "
                    "build cannot decode)")
        if spec.kind == "stream":
            return (f"stream {spec.display}: cannot be opened within {self._settings.open_timeout_s:g} s "
                    "(check the URL, credentials and network)")
        return (f"{spec.display}: cannot open the camera (is it connected, and is the user in the 'video' "
                "group?)")

    def _configure_camera(self, cap: VideoCaptureLike) -> None:
        s = self._settings
        if s.fourcc is not None:
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter.fourcc(*s.fourcc))
        if s.width is not None:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, s.width)
        if s.height is not None:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, s.height)
        if s.fps is not None:
            cap.set(cv2.CAP_PROP_FPS, s.fps)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        w, h, fps = (cap.get(p) for p in (cv2.CAP_PROP_FRAME_WIDTH, cv2.CAP_PROP_FRAME_HEIGHT, cv2.CAP_PROP_FPS))
        log.info("%s: capturing %dx%d at %.1f fps (requested %sx%s at %s fps, fourcc %s)", self.spec.display,
                 int(w), int(h), fps, s.width, s.height, s.fps, s.fourcc)

    def _read_raw(self) -> UInt8Image | None:
        if self._cap is None:
            return None
        ok, image = self._cap.read()
        if not ok or image is None:
            return None
        return as_bgr(image)

    def read(self) -> tuple[UInt8Image, int] | None:
        if self._pending is not None:
            image, self._pending = self._pending, None
        else:
            got = self._read_raw()
            if got is None and self.spec.kind == "file":
                got = self._skip_corrupt()
            if got is None:
                return None
            image = got
        idx = self._index
        self._index += 1
        return image, idx

    def _skip_corrupt(self) -> UInt8Image | None:
        """After a failed read of a file before its reported last frame, read on past the corrupt packets."""
        if self._cap is None or self._frame_count <= 0:
            return None
        position = self._cap.get(cv2.CAP_PROP_POS_FRAMES)
        if not math.isfinite(position) or position >= self._frame_count:
            return None  # the real end of the file
        for attempt in range(1, FILE_READ_RETRIES + 1):
            got = self._read_raw()
            if got is not None:
                self.corrupt_reads += attempt
                log.warning("%s: skipped %d undecodable packet(s) after frame %d (corrupt data); continuing",
                            self.spec.display, attempt, int(position))
                return got
        self.corrupt_reads += FILE_READ_RETRIES
        # once per capture at WARNING: a looping file that is short of its reported count would repeat it forever
        log.log(logging.INFO if self._short_end_logged else logging.WARNING,
                "%s: no frame decodes after frame %d of the %d the container reports (%d reads failed: truncated "
                "or corrupt file, or a wrong frame count); ending it here", self.spec.display, int(position),
                int(self._frame_count), FILE_READ_RETRIES)
        self._short_end_logged = True
        return None

    def close(self) -> None:
        self._pending = None
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class FolderCapture:
    """The images of a folder in sorted file-name order, paced at ``source.folder_fps``."""

    def __init__(self, spec: SourceSpec, settings: SourceSettings) -> None:
        if spec.kind != "folder":
            raise ValueError("FolderCapture reads image folders only")
        self.spec = spec
        self._fps = settings.folder_fps
        self._files: list[Path] = []
        self._next = 0
        self.skipped = 0

    @property
    def fps(self) -> float:
        return self._fps

    def open(self) -> None:
        folder = Path(str(self.spec.target))
        try:
            files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        except OSError as exc:
            raise SourceError(f"image folder {folder}: cannot list it ({exc.strerror})") from None
        if not files:
            raise SourceError(f"image folder {folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        self._files = files
        self._next = 0
        log.info("opened image folder %s (%d images)", folder, len(files))

    def read(self) -> tuple[UInt8Image, int] | None:
        while self._next < len(self._files):
            idx = self._next
            path = self._files[idx]
            self._next += 1
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                self.skipped += 1
                log.warning("image folder: skipping %s (cannot be decoded)", path)
                continue
            return as_bgr(image), idx
        return None

    def close(self) -> None:
        self._next = len(self._files)
