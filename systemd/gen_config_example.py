"""Write systemd/config.example.toml from the Settings model: every key, commented, with its default and meaning.

    .venv/bin/python systemd/gen_config_example.py > systemd/config.example.toml

tests/unit/test_systemd_unit.py fails when the checked-in file differs from this output (so it never drifts).
"""

from __future__ import annotations

import contextlib
import sys
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from edge_agent.paths import INSTALLED_MODELS_DIR, default_models_dir
from edge_agent.settings import ENV_PREFIX, Settings

HEADER = f"""\
# edge-agent configuration: /etc/edge-agent/config.toml (generated from edge_agent/settings.py by
# systemd/gen_config_example.py). Every key is optional: a commented line shows the default.
# Precedence: defaults < this file < environment ({ENV_PREFIX}SECTION__KEY, e.g.
# {ENV_PREFIX}PUBLISHER__ENDPOINT=tcp://0.0.0.0:5556) < command-line flags.
# Check a change:  edge-agent check-config --config /etc/edge-agent/config.toml
# Apply it:        sudo systemctl reload edge-agent   (SIGHUP; an invalid file is rejected and the old one kept)
"""


# Meanings for settings whose Field has no description (the description wins when both exist).
MEANINGS: dict[str, str] = {
    "source.rtsp_transport": "RTSP transport (tcp survives lossy networks; udp has lower latency)",
    "source.open_timeout_s": "give up opening the source after this many seconds",
    "source.read_timeout_s": "a live source delivering no frame for this long is reconnected",
    "source.reconnect_initial_s": "first delay before reconnecting a live source (doubles on each failure)",
    "source.reconnect_max_s": "longest delay between reconnect attempts",
    "backend.onnx.inter_op_threads": "ONNX Runtime threads running independent graph nodes in parallel",
    "backend.onnx.graph_optimization": "ONNX Runtime graph optimization level",
    "detector.model": "face detector model directory (with manifest.json) for the ONNX backend",
    "detector.hailo_model": "face detector model directory (HEF + manifest.json) for the Hailo backend",
    "detector.score_threshold": "minimum face confidence",
    "detector.nms_iou": "boxes overlapping more than this IoU are merged by non-maximum suppression",
    "detector.input_height": "None = the model manifest's size",
    "detector.max_faces": "at most this many faces per frame (highest scores first)",
    "classifier.model": "expression classifier model directory (with manifest.json, classes.json) for ONNX",
    "classifier.hailo_model": "expression classifier model directory (HEF + manifest.json) for the Hailo backend",
    "classifier.max_batch": "faces classified per inference call",
    "publisher.camera_id": "names this camera in messages and topics (emotion.v1.<camera_id>)",
    "publisher.status_interval_s": "seconds between status.v1.<camera_id> messages",
    "logging.level": "log level",
}


def meaning(dotted: str, info: FieldInfo) -> str | None:
    return info.description or MEANINGS.get(dotted)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Path):
        with contextlib.suppress(ValueError):  # show the installed location, not this checkout's
            value = INSTALLED_MODELS_DIR / value.relative_to(default_models_dir())
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def _bounds(info: FieldInfo) -> str:
    parts: list[str] = []
    for meta in info.metadata:
        for attr, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            v = getattr(meta, attr, None)
            if v is not None:
                parts.append(f"{sym} {v}")
        pattern = getattr(meta, "pattern", None)
        if pattern is not None:
            parts.append(f"matches {pattern}")
    return ", ".join(parts)


def _choices(annotation: Any) -> list[Any] | None:
    for arg in (annotation, *typing.get_args(annotation)):
        if typing.get_origin(arg) is typing.Literal:
            return list(typing.get_args(arg))
    return None


def _section(name: str, model: BaseModel, out: list[str]) -> None:
    fields = type(model).model_fields
    scalars = [(k, f) for k, f in fields.items() if not isinstance(getattr(model, k), BaseModel)]
    tables = [(k, f) for k, f in fields.items() if isinstance(getattr(model, k), BaseModel)]
    out.append(f"[{name}]")
    for key, info in scalars:
        notes: list[str] = []
        text = meaning(f"{name}.{key}", info)
        if text:
            notes.append(text)
        choices = _choices(info.annotation)
        if choices is not None:
            notes.append("one of: " + ", ".join(_toml(c) for c in choices))
        bounds = _bounds(info)
        if bounds:
            notes.append(bounds)
        for note in notes:
            out.append(f"# {note}")
        value = getattr(model, key)
        out.append(f"#{key} = {_toml(value)}" if value is not None else f"#{key} =   (unset by default)")
    out.append("")
    for key, _info in tables:
        _section(f"{name}.{key}", getattr(model, key), out)


def render(settings: Settings | None = None) -> str:
    """The example file for ``settings`` (the defaults when None)."""
    s = settings if settings is not None else Settings()
    out: list[str] = [HEADER]
    for key in type(s).model_fields:
        _section(key, getattr(s, key), out)
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
