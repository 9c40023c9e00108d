"""Configuration: defaults < TOML file < ``EDGE_AGENT_*`` environment < command-line flags.

One pydantic-settings root with ``extra="forbid"`` everywhere and bounds on every number. Nested keys are
set from the environment with ``__``: ``EDGE_AGENT_PUBLISHER__ENDPOINT=tcp://127.0.0.1:6000``.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from edge_agent.paths import DEFAULT_CONFIG_FILE, default_models_dir

ENV_PREFIX = "EDGE_AGENT_"


class ConfigError(ValueError):
    """The configuration is invalid. ``str()`` is one line naming the key and the problem."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SourceSettings(_Section):
    uri: str = Field(
        "0",
        description="camera index ('0'), V4L2 path ('/dev/video0'), video file, image folder, rtsp:// URL, "
        "or 'sample:NAME' for a bundled registry sample (e.g. sample:single_face.mp4)",
    )
    loop: bool = Field(False, description="file sources: restart at the end instead of ending the run")
    pace: Literal["native", "fast"] = Field(
        "native", description="file/folder sources: play at the file's frame rate, or as fast as processed"
    )
    width: int | None = Field(None, ge=16, le=7680, description="requested capture width (cameras)")
    height: int | None = Field(None, ge=16, le=4320, description="requested capture height (cameras)")
    fps: float | None = Field(None, gt=0, le=480, description="requested capture rate (cameras)")
    fourcc: str | None = Field(
        None, pattern=r"^[A-Z0-9 ]{4}$", description="camera pixel format to request, e.g. MJPG (USB cameras)"
    )
    rtsp_transport: Literal["tcp", "udp"] = "tcp"
    open_timeout_s: float = Field(10.0, gt=0, le=300)
    read_timeout_s: float = Field(5.0, gt=0, le=300)
    reconnect_initial_s: float = Field(0.5, gt=0, le=60)
    reconnect_max_s: float = Field(10.0, gt=0, le=600)
    folder_fps: float = Field(10.0, gt=0, le=1000, description="image-folder sources: frames per second")


class OnnxSettings(_Section):
    intra_op_threads: int = Field(1, ge=0, le=256, description="0 lets ONNX Runtime choose")
    inter_op_threads: int = Field(1, ge=0, le=256)
    spin: bool = Field(False, description="let idle ONNX Runtime threads spin (lower latency, more CPU)")
    graph_optimization: Literal["disable", "basic", "extended", "all"] = "all"


class HailoSettings(_Section):
    device_id: str | None = Field(None, description="PCIe BDF of the Hailo device; None = first")
    multi_process_service: bool = Field(
        False, description="share the chip through hailort.service (needs that service running)"
    )
    timeout_ms: int = Field(1000, ge=10, le=60000, description="bound on every HailoRT wait")


class BackendSettings(_Section):
    kind: Literal["auto", "onnx", "hailo"] = Field(
        "auto", description="auto: Hailo when hailo_platform imports and a device opens, else ONNX"
    )
    onnx: OnnxSettings = Field(default_factory=OnnxSettings)
    hailo: HailoSettings = Field(default_factory=HailoSettings)


class DetectorSettings(_Section):
    model: Path = Field(default_factory=lambda: default_models_dir() / "detector" / "acwface-dcn")
    hailo_model: Path = Field(default_factory=lambda: default_models_dir() / "hailo8" / "detector")
    score_threshold: float = Field(0.6, ge=0.0, lt=1.0)
    nms_iou: float = Field(0.4, gt=0.0, le=1.0)
    input_width: int | None = Field(None, ge=32, le=4096, description="None = the model manifest's size")
    input_height: int | None = Field(None, ge=32, le=4096)
    top_k: int = Field(500, ge=1, le=100000, description="candidates kept before NMS")
    max_faces: int = Field(50, ge=1, le=1000)
    mode: Literal["full", "fast"] = Field(
        "full", description="full: detect on the whole frame every frame; fast: whole frame every full_every "
        "frames (and when a face is lost), in between only around the faces of the previous frame (ROI crops at "
        "roi_size); a face entering the picture is found at most full_every - 1 frames late"
    )
    full_every: int = Field(
        10, ge=1, le=300, description="fast mode: a whole-frame detection every this many frames"
    )
    roi_expand: float = Field(
        2.0, ge=1.2, le=6.0, description="fast mode: a ROI is a square of this many times the face's longer side, "
        "centred on it (a face moving more than (roi_expand - 1) / 2 face widths per frame is re-found by a "
        "whole-frame detection)"
    )
    roi_size: int = Field(
        128, ge=32, le=1024, description="fast mode: ROI crops run at roi_size x roi_size (a multiple of the "
        "model's size multiple, 32 for the shipped detectors; needs a dynamic-size detector)"
    )
    full_size: Literal["fixed", "auto"] = Field(
        "fixed", description="fast mode: fixed = whole-frame detections at the input size above; auto = shrink it "
        "(down to half) while the smallest face of the last whole-frame detection stays >= 48 network pixels"
    )


class ClassifierSettings(_Section):
    model: Path = Field(default_factory=lambda: default_models_dir() / "classifier" / "mnv3s-facex7")
    hailo_model: Path = Field(default_factory=lambda: default_models_dir() / "hailo8" / "classifier")
    margin: float = Field(0.2, ge=0.0, le=2.0, description="crop margin as a fraction of the box size")
    align: bool = Field(False, description="5-point similarity alignment instead of a square crop")
    max_batch: int = Field(16, ge=1, le=256)


class PublisherSettings(_Section):
    endpoint: str = Field("tcp://127.0.0.1:5556", description="ZeroMQ PUB bind endpoint")
    camera_id: str = Field("cam0", pattern=r"^[A-Za-z0-9_\-]{1,64}$")
    sndhwm: int = Field(16, ge=1, le=100000, description="messages queued per subscriber before dropping")
    status_interval_s: float = Field(1.0, gt=0.0, le=3600.0)

    @field_validator("endpoint")
    @classmethod
    def _endpoint_scheme(cls, v: str) -> str:
        if not re.match(r"^(tcp|ipc|inproc)://.+", v):
            raise ValueError("must look like tcp://HOST:PORT, ipc://PATH or inproc://NAME")
        return v


class SecuritySettings(_Section):
    curve: bool = Field(
        False, description="encrypt and authenticate the stream with ZeroMQ CURVE (required for an endpoint "
        "other hosts can reach; possible on any endpoint)",
    )
    server_secret_key: Path | None = Field(
        None, description="the daemon's CURVE secret key file (NAME.key_secret from `edge-agent keygen`, mode 0600)"
    )
    allowed_clients_dir: Path | None = Field(
        None, description="directory of the public .key files of the clients allowed to subscribe "
        "(not world-writable)",
    )
    allow_insecure_remote: bool = Field(
        False, description="publish unencrypted on an endpoint other hosts can reach (logged as a WARNING at "
        "every start)",
    )
    server_public_key: Path | None = Field(
        None, description="subscribe: the daemon's public key file (NAME.key) to connect with CURVE"
    )
    client_secret_key: Path | None = Field(
        None, description="subscribe: this client's secret key file (NAME.key_secret, mode 0600)"
    )


class PipelineSettings(_Section):
    queue_size: int = Field(2, ge=1, le=256, description="bounded capture queue; the oldest frame is dropped")
    detect_workers: int = Field(
        1, ge=1, le=4,
        description="detector threads on consecutive frames, published in frame order: 2 keeps two detections in "
        "flight (both cores busy on ONNX Runtime at 1 intra-op thread, the Hailo chip busy while the host "
        "decodes); must be 1 with detector.mode = \"fast\" (its ROIs follow the previous frame)",
    )


class TrackingSettings(_Section):
    enabled: bool = Field(
        True, description="track faces across frames: track_id, smoothed expressions, events.v1.<camera_id>"
    )
    iou_threshold: float = Field(
        0.3, gt=0.0, le=1.0, description="a face continues a track when its box overlaps the track's predicted box "
        "by at least this IoU"
    )
    centre_distance: float = Field(
        1.0, ge=0.0, le=10.0, description="fallback for fast motion: else the nearest track whose centre is within "
        "this many box sides (0 = off)"
    )
    min_hits: int = Field(
        3, ge=1, le=100, description="frames in a row before a track is confirmed (gets a track_id, 'new' event)"
    )
    max_age_s: float = Field(
        1.0, gt=0.0, le=60.0, description="a confirmed track ends after this many seconds unseen (any frame rate)"
    )
    half_life_s: float = Field(
        0.5, gt=0.0, le=60.0, description="half-life of the per-track exponential smoothing of the probabilities"
    )
    label_switch_margin: float = Field(
        0.1, ge=0.0, le=1.0, description="the smoothed label changes only when another class leads by more than this"
    )
    min_face_px: int = Field(
        24, ge=0, le=4096, description="faces whose shorter box side is below this are not classified "
        "(skipped: too_small); 0 = off"
    )
    blur_threshold: float = Field(
        0.0, ge=0.0, le=100000.0, description="faces whose Laplacian variance (64x64 grayscale) is below this are "
        "not classified (skipped: blurry); 0 = off"
    )


class LoggingSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["auto", "plain", "journal"] = Field(
        "auto", description="journal: no timestamps (journald adds them); auto: journal under systemd"
    )
    rate_limit_s: float = Field(
        10.0, ge=0.0, le=3600.0,
        description="let the same message through at most once per this many seconds, then report how many "
        "were suppressed; 0 disables",
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        validate_assignment=True,
    )

    source: SourceSettings = Field(default_factory=SourceSettings)
    backend: BackendSettings = Field(default_factory=BackendSettings)
    detector: DetectorSettings = Field(default_factory=DetectorSettings)
    classifier: ClassifierSettings = Field(default_factory=ClassifierSettings)
    publisher: PublisherSettings = Field(default_factory=PublisherSettings)
    security: SecuritySettings = Field(default_factory=SecuritySettings)
    pipeline: PipelineSettings = Field(default_factory=PipelineSettings)
    tracking: TrackingSettings = Field(default_factory=TrackingSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)

    @model_validator(mode="after")
    def _fast_mode_detects_in_order(self) -> Settings:
        if self.detector.mode == "fast" and self.pipeline.detect_workers > 1:
            raise ValueError(f"pipeline.detect_workers = {self.pipeline.detect_workers} needs detector.mode = "
                             "\"full\": fast mode's ROIs follow the previous frame's faces (set it to 1)")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_file = _ACTIVE_TOML.get("path")
        if toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file, deep_merge=True))
        return tuple(sources)


# The TOML file of the load_settings() call in progress (pydantic-settings builds sources per class).
_ACTIVE_TOML: dict[str, Path | None] = {"path": None}


def _one_line(exc: ValidationError) -> str:
    err = exc.errors()[0]
    key = ".".join(str(p) for p in err["loc"]) or "(root)"
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    if not err["loc"] and err["type"] == "value_error":  # a check across sections: its message names the keys
        return f"{msg.removeprefix('Value error, ')}{more}"
    return f"{key}: {msg}{more}"


def _nest(overrides: dict[str, Any]) -> dict[str, Any]:
    """Turn {"source.uri": x} into {"source": {"uri": x}}; None values are skipped (flag not given)."""
    out: dict[str, Any] = {}
    for dotted, value in overrides.items():
        if value is None:
            continue
        node = out
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


# EDGE_AGENT_* variables that are not settings (read by paths.py and assets.py).
NON_SETTINGS_ENV = frozenset({"EDGE_AGENT_MODELS_DIR", "EDGE_AGENT_CACHE"})


def unknown_env_key(environ: Mapping[str, str]) -> str | None:
    """The first ``EDGE_AGENT_*`` variable naming no settings section (pydantic-settings would ignore it)."""
    for name in environ:
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper in NON_SETTINGS_ENV:
            continue
        section = upper[len(ENV_PREFIX):].split("__", 1)[0].lower()
        if section not in Settings.model_fields:
            return name
    return None


def load_settings(config_file: Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Build the effective settings.

    ``config_file`` None means the default path, used only if it exists; an explicit file must exist.
    ``overrides`` are dotted keys from command-line flags (highest precedence).
    Raises ConfigError with a one-line message naming the key and the problem.
    """
    explicit = config_file is not None
    path = config_file if config_file is not None else DEFAULT_CONFIG_FILE
    if not path.exists():
        if explicit:
            raise ConfigError(f"config file {path}: not found")
        path_or_none: Path | None = None
    else:
        path_or_none = path
    if path_or_none is not None:
        try:
            tomllib.loads(path_or_none.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path_or_none}: invalid TOML ({exc})") from None
        except OSError as exc:
            raise ConfigError(f"config file {path_or_none}: cannot read ({exc.strerror})") from None
    bad_env = unknown_env_key(os.environ)
    if bad_env is not None:
        raise ConfigError(f"environment {bad_env}: unknown key (sections: {', '.join(Settings.model_fields)})")
    _ACTIVE_TOML["path"] = path_or_none
    try:
        return Settings(**_nest(overrides or {}))
    except ValidationError as exc:
        raise ConfigError(_one_line(exc)) from None
    finally:
        _ACTIVE_TOML["path"] = None


_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<user>[^:/@\s]+):(?P<pw>[^@/\s]+)@")


def redact(text: str) -> str:
    """Hide passwords in URLs (``rtsp://user:secret@host`` -> ``rtsp://user:***@host``)."""
    return _CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)


def effective_config_toml(settings: Settings) -> str:
    """The merged configuration as TOML text, with secrets redacted (for ``check-config``)."""
    data = settings.model_dump(mode="json")
    lines: list[str] = []

    def emit(table: str, obj: dict[str, Any]) -> None:
        scalars = {k: v for k, v in obj.items() if not isinstance(v, dict)}
        tables = {k: v for k, v in obj.items() if isinstance(v, dict)}
        if table:
            lines.append(f"[{table}]")
        for k, v in scalars.items():
            if v is None:
                lines.append(f"# {k} = (unset)")
            else:
                lines.append(f"{k} = {_toml_value(v)}")
        if table:
            lines.append("")
        for k, v in tables.items():
            emit(f"{table}.{k}" if table else k, v)

    emit("", data)
    return redact("\n".join(lines).rstrip() + "\n")


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    s = str(v).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{s}"'
