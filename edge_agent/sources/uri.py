"""What a ``source.uri`` string names: a camera, a V4L2 node, a network stream, a video file or an image folder."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from edge_agent.errors import SourceError
from edge_agent.settings import redact

SourceKind = Literal["device", "v4l2", "stream", "file", "folder"]
SAMPLE_PREFIX = "sample:"
_STREAM = re.compile(r"^(rtsp|rtsps|rtmp|http|https|udp|tcp)://", re.IGNORECASE)
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm"})


@dataclass(frozen=True, slots=True)
class SourceSpec:
    kind: SourceKind
    target: str | int  # device index, or a path / URL
    display: str  # for logs and status messages (credentials redacted)

    @property
    def live(self) -> bool:
        """Live sources run forever and are reopened when they fail; files and folders end."""
        return self.kind in ("device", "v4l2", "stream")


def classify(uri: str) -> SourceSpec:
    """Classify a (sample-resolved) source string. Raises SourceError for a local path that does not exist."""
    text = uri.strip()
    if not text:
        raise SourceError("source.uri is empty: give a camera index, /dev/videoN, a file, a folder or an rtsp:// URL")
    if text.isdigit():
        return SourceSpec("device", int(text), f"camera {text}")
    if _STREAM.match(text):
        return SourceSpec("stream", text, redact(text))
    if text.startswith("/dev/"):
        return SourceSpec("v4l2", text, text)
    path = Path(text).expanduser()
    if path.is_dir():
        return SourceSpec("folder", str(path), str(path))
    if not path.exists():
        raise SourceError(f"source {text}: no such file or directory (give an existing video file, image folder, "
                          "camera index, /dev/videoN or rtsp:// URL)")
    return SourceSpec("file", str(path), str(path))


def resolve(uri: str) -> SourceSpec:
    """Like :func:`classify`, and ``sample:NAME`` is fetched through :mod:`edge_agent.assets` first."""
    if uri.startswith(SAMPLE_PREFIX):
        from edge_agent.assets import ASSETS, AssetError, fetch

        name = uri[len(SAMPLE_PREFIX):]
        if name not in ASSETS:
            raise SourceError(f"source {uri}: unknown sample {name!r}; see `edge-agent samples list`")
        try:
            path = fetch(name)
        except AssetError as exc:
            raise SourceError(f"source {uri}: {exc}") from None
        return classify(str(path))
    return classify(uri)
