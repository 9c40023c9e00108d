"""Frame sources: cameras, V4L2 nodes, RTSP/network streams, video files, image folders and ``sample:NAME``.

``open_source(settings.source, queue_size=...)`` resolves the URI, opens it (raising SourceError naming the
source when it cannot be opened or decoded) and returns a :class:`FrameSource` whose capture thread starts on
``start()`` (or the first ``read``/``frames`` call).
"""

from __future__ import annotations

from edge_agent.errors import SourceError
from edge_agent.settings import SourceSettings
from edge_agent.sources.capture import Capture, FolderCapture, OpenCvCapture, VideoCaptureFactory
from edge_agent.sources.threaded import FrameSource, SourceState
from edge_agent.sources.uri import SourceSpec, classify, resolve

__all__ = [
    "Capture",
    "FolderCapture",
    "FrameSource",
    "OpenCvCapture",
    "SourceError",
    "SourceSpec",
    "SourceState",
    "VideoCaptureFactory",
    "classify",
    "make_capture",
    "open_source",
    "resolve",
]


def make_capture(spec: SourceSpec, settings: SourceSettings, factory: VideoCaptureFactory | None = None) -> Capture:
    if spec.kind == "folder":
        return FolderCapture(spec, settings)
    if factory is not None:
        return OpenCvCapture(spec, settings, factory)
    return OpenCvCapture(spec, settings)


def open_source(
    settings: SourceSettings, *, queue_size: int = 2, factory: VideoCaptureFactory | None = None
) -> FrameSource:
    """Resolve and open ``settings.uri``; the returned source is open but its thread is not started yet."""
    spec = resolve(settings.uri)
    source = FrameSource(
        make_capture(spec, settings, factory),
        loop=settings.loop,
        pace=settings.pace,
        queue_size=queue_size,
        reconnect_initial_s=settings.reconnect_initial_s,
        reconnect_max_s=settings.reconnect_max_s,
    )
    source.open()
    return source
