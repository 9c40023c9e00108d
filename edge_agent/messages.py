"""The wire schema, defined once: what the daemon publishes on ZeroMQ.

Every message is a two-frame ZeroMQ multipart ``[topic, json]``:

* ``emotion.v1.<camera_id>`` -> :class:`EmotionMessage`, one per processed frame (also with zero faces);
* ``status.v1.<camera_id>`` -> :class:`StatusMessage`, every ``publisher.status_interval_s`` seconds;
* ``events.v1.<camera_id>`` -> :class:`EventMessage`, when a face track starts, changes label or ends
  (``tracking.enabled``; see :mod:`edge_agent.tracking`).

``schema`` is 1 for this layout; a consumer must check it. Times: ``t_*`` are wall-clock epoch seconds
(comparable across hosts with synchronised clocks); ``latency_ms`` is capture -> publish measured on the
daemon's monotonic clock. Boxes and landmarks are in pixels of the captured frame (``size`` = [w, h]).
``probs`` lists every class in the model's ``classes.json`` order.

``docs/messages.md`` is generated from these models by :func:`render_docs` (a test keeps it in sync).
"""

from __future__ import annotations

import json
from typing import Annotated, Literal, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1
EMOTION_TOPIC_PREFIX = "emotion.v1."
STATUS_TOPIC_PREFIX = "status.v1."
EVENTS_TOPIC_PREFIX = "events.v1."
SKIP_REASONS: tuple[str, ...] = ("too_small", "blurry")  # FaceMessage.skipped values (edge_agent.quality)

# Stage names used in StatusMessage.latency_ms, in pipeline order.
STAGES: tuple[str, ...] = (
    "capture_queue",  # capture -> taken off the capture queue by the inference thread
    "preprocess",  # detector letterbox + tensor
    "detector",  # detector model run
    "decode",  # anchors decode + NMS
    "crop",  # face crops (+ alignment) for the classifier
    "classifier",  # classifier model run + softmax
    "publish",  # message build + serialise + send
    "end_to_end",  # capture -> sent
)

NonNegFloat = Annotated[float, Field(ge=0.0)]
Prob = Annotated[float, Field(ge=0.0, le=1.0)]


def emotion_topic(camera_id: str) -> str:
    return f"{EMOTION_TOPIC_PREFIX}{camera_id}"


def status_topic(camera_id: str) -> str:
    return f"{STATUS_TOPIC_PREFIX}{camera_id}"


def events_topic(camera_id: str) -> str:
    return f"{EVENTS_TOPIC_PREFIX}{camera_id}"


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class FaceMessage(_Wire):
    box: tuple[float, float, float, float] = Field(description="x1, y1, x2, y2 in frame pixels")
    score: Prob = Field(description="detector confidence")
    landmarks: tuple[
        tuple[float, float], tuple[float, float], tuple[float, float], tuple[float, float], tuple[float, float]
    ] = Field(description="[x, y] x5: left eye, right eye, nose, left mouth corner, right mouth corner")
    label: str | None = Field(description="the most probable expression in this frame; null when skipped")
    confidence: Prob | None = Field(description="probability of label; null when skipped")
    probs: dict[str, Prob] | None = Field(description="every class, in classes.json order; null when skipped")
    skipped: Literal["too_small", "blurry"] | None = Field(
        None, description="why the face was not classified (tracking.min_face_px, tracking.blur_threshold); "
        "null when it was")
    track_id: int | None = Field(
        None, ge=1, description="stable id of this face across frames; null while the track is tentative "
        "(fewer than tracking.min_hits frames) or tracking is off")
    smoothed: dict[str, Prob] | None = Field(
        None, description="per-track exponentially smoothed probs (half-life tracking.half_life_s), classes.json "
        "order; null until the track has a classified frame, or tracking is off")
    smoothed_label: str | None = Field(
        None, description="argmax of smoothed, switched only past tracking.label_switch_margin (no flicker)")


class EmotionMessage(_Wire):
    schema_version: Literal[1] = Field(1, alias="schema", description="wire schema version; check it")
    camera_id: str = Field(description="publisher.camera_id (also the topic suffix)")
    seq: int = Field(ge=0, description="strictly increasing per run (frames dropped before inference leave gaps)")
    frame_id: int = Field(ge=0, description="position in the source (file frame index), else equal to seq")
    t_capture: float = Field(description="wall-clock epoch seconds when the frame was captured")
    t_publish: float = Field(description="wall-clock epoch seconds when this message was sent")
    latency_ms: NonNegFloat = Field(description="capture -> publish, monotonic clock")
    size: tuple[int, int] = Field(description="frame [width, height] in pixels")
    backend: str = Field(description="onnx or hailo")
    faces: list[FaceMessage] = Field(description="one entry per detected face (empty list: no face)")


class LatencyPercentiles(_Wire):
    p50: NonNegFloat
    p95: NonNegFloat
    p99: NonNegFloat


class ModelIds(_Wire):
    detector: str
    classifier: str


class SourceStatus(_Wire):
    uri: str = Field(description="the source, credentials redacted")
    state: str = Field(description="opening, running, reconnecting, ended, closed or failed")
    reconnects: int = Field(ge=0)


class StatusMessage(_Wire):
    schema_version: Literal[1] = Field(1, alias="schema", description="wire schema version; check it")
    camera_id: str = Field(description="publisher.camera_id (also the topic suffix)")
    t: float = Field(description="wall-clock epoch seconds")
    uptime_s: NonNegFloat = Field(description="seconds since the pipeline started")
    state: str = Field(description="pipeline state: starting, running, ended, stopping, stopped or failed")
    backend: str = Field(description="onnx or hailo")
    backend_reason: str = Field(description="why this backend was chosen")
    models: ModelIds = Field(description="model_id of the detector and the classifier (from their manifests)")
    source: SourceStatus = Field(description="uri (credentials redacted), state, reconnects")
    fps_in: NonNegFloat = Field(description="frames captured per second (recent window)")
    fps_out: NonNegFloat = Field(description="emotion messages published per second (recent window)")
    frames_captured: int = Field(ge=0, description="frames read from the source since start")
    frames_published: int = Field(ge=0, description="emotion messages sent since start")
    drops: int = Field(ge=0, description="frames dropped by the bounded capture queue (oldest first)")
    publish_drops: int = Field(ge=0, description="messages the publisher could not hand to ZeroMQ")
    latency_ms: dict[str, LatencyPercentiles] = Field(
        description="per-stage percentiles over the last samples: " + ", ".join(STAGES)
        + " (crop and classifier: frames with at least one face only)"
    )


class EventMessage(_Wire):
    schema_version: Literal[1] = Field(1, alias="schema", description="wire schema version; check it")
    camera_id: str = Field(description="publisher.camera_id (also the topic suffix)")
    event: Literal["new", "update", "end"] = Field(
        description="new: a track was confirmed; update: its smoothed label changed; end: it was not seen for "
        "tracking.max_age_s (or the source ended, or the daemon stopped)")
    track_id: int = Field(ge=1, description="the track_id published with the face")
    t: float = Field(description="wall-clock epoch seconds of the frame that caused the event")
    seq: int = Field(ge=0, description="seq of that frame's emotion message")
    box: tuple[float, float, float, float] = Field(description="the track's last box, x1, y1, x2, y2")
    label: str | None = Field(description="the smoothed label now (end: the last one); null if never classified")
    previous_label: str | None = Field(None, description="update: the smoothed label before")
    duration_s: NonNegFloat | None = Field(None, description="end: seconds from first to last sighting")
    dominant: str | None = Field(
        None, description="end: argmax of the time-weighted mean probabilities over the track's life")
    mean_probs: dict[str, Prob] | None = Field(
        None, description="end: those time-weighted mean probabilities, classes.json order")


WireMessage = EmotionMessage | StatusMessage | EventMessage


def encode(msg: WireMessage) -> bytes:
    """JSON bytes for the wire (field ``schema``, not ``schema_version``)."""
    return msg.model_dump_json(by_alias=True).encode("utf-8")


def decode(topic: str | bytes, payload: bytes) -> WireMessage:
    """Parse one received ``[topic, payload]``; raises ValueError on an unknown topic or an invalid body."""
    t = topic.decode("utf-8", "replace") if isinstance(topic, bytes) else topic
    if t.startswith(EMOTION_TOPIC_PREFIX):
        return EmotionMessage.model_validate_json(payload)
    if t.startswith(STATUS_TOPIC_PREFIX):
        return StatusMessage.model_validate_json(payload)
    if t.startswith(EVENTS_TOPIC_PREFIX):
        return EventMessage.model_validate_json(payload)
    raise ValueError(f"unknown topic {t!r}: expected {EMOTION_TOPIC_PREFIX}*, {STATUS_TOPIC_PREFIX}* or "
                     f"{EVENTS_TOPIC_PREFIX}*")


# ---------------------------------------------------------------------------------------------------------
# Examples and generated documentation


def example_emotion() -> EmotionMessage:
    labels = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
    probs = dict(zip(labels, (0.01, 0.0, 0.01, 0.91, 0.01, 0.02, 0.04), strict=True))
    return EmotionMessage(
        camera_id="cam0",
        seq=812,
        frame_id=812,
        t_capture=1767225600.125,
        t_publish=1767225600.148,
        latency_ms=23.1,
        size=(640, 360),
        backend="onnx",
        faces=[
            FaceMessage(
                box=(250.4, 61.0, 372.9, 219.7),
                score=0.998,
                landmarks=((282.1, 125.3), (337.6, 124.0), (310.2, 156.8), (287.5, 185.0), (333.9, 184.2)),
                label="happy",
                confidence=0.91,
                probs=probs,
                track_id=3,
                smoothed=dict(zip(labels, (0.02, 0.0, 0.01, 0.84, 0.02, 0.03, 0.08), strict=True)),
                smoothed_label="happy",
            ),
            FaceMessage(
                box=(20.0, 40.5, 38.2, 61.0),
                score=0.83,
                landmarks=((25.1, 48.0), (32.9, 47.8), (29.0, 52.6), (25.8, 56.1), (32.4, 56.0)),
                label=None,
                confidence=None,
                probs=None,
                skipped="too_small",
            ),
        ],
    )


def example_events() -> list[EventMessage]:
    labels = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
    box = (250.4, 61.0, 372.9, 219.7)
    return [
        EventMessage(camera_id="cam0", event="new", track_id=3, t=1767225590.020, seq=560, box=box,
                     label="neutral"),
        EventMessage(camera_id="cam0", event="update", track_id=3, t=1767225599.310, seq=789, box=box,
                     label="happy", previous_label="neutral"),
        EventMessage(camera_id="cam0", event="end", track_id=3, t=1767225612.500, seq=1101, box=box,
                     label="happy", duration_s=21.48, dominant="happy",
                     mean_probs=dict(zip(labels, (0.02, 0.0, 0.01, 0.55, 0.02, 0.04, 0.36), strict=True))),
    ]


def example_status() -> StatusMessage:
    pct = {s: LatencyPercentiles(p50=v, p95=v * 1.3, p99=v * 1.6) for s, v in zip(
        STAGES, (1.2, 1.1, 9.8, 0.6, 0.3, 2.4, 0.1, 16.0), strict=True)}
    return StatusMessage(
        camera_id="cam0",
        t=1767225601.0,
        uptime_s=32.5,
        state="running",
        backend="onnx",
        backend_reason="backend.kind=auto: hailo_platform is not installed",
        models=ModelIds(detector="acwface-dcn", classifier="mnv3s-facex7"),
        source=SourceStatus(uri="rtsp://viewer:***@192.168.1.20/stream1", state="running", reconnects=0),
        fps_in=25.0,
        fps_out=24.9,
        frames_captured=813,
        frames_published=812,
        drops=1,
        publish_drops=0,
        latency_ms=pct,
    )


def _type_name(ann: object) -> str:
    """``tuple[float, float]``-style name of an annotation, without Annotated metadata or module prefixes."""
    origin, args = get_origin(ann), get_args(ann)
    if origin is Annotated:
        return _type_name(args[0])
    if origin is Literal:
        return " | ".join(json.dumps(a) for a in args)
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join(_type_name(a) for a in args)}]"
    return getattr(ann, "__name__", str(ann))


def _fields_table(model: type[BaseModel]) -> list[str]:
    rows = ["| field | type | meaning |", "|---|---|---|"]
    for name, info in model.model_fields.items():
        wire = info.alias or name
        typ = _type_name(info.annotation)
        desc = info.description or ""
        rows.append(f"| `{wire}` | `{typ}` | {desc} |")
    return rows


def render_docs() -> str:
    """The text of ``docs/messages.md`` (regenerate with ``python -m edge_agent.messages > docs/messages.md``)."""
    em, st, ev = example_emotion(), example_status(), example_events()
    out = [
        "# Wire messages (schema 1)",
        "",
        "<!-- generated by `python -m edge_agent.messages > docs/messages.md`; do not edit by hand -->",
        "",
        "The daemon publishes ZeroMQ multipart messages `[topic, json]` on a PUB socket "
        "(`publisher.endpoint`). Subscribe to `emotion.v1.` / `status.v1.` (or the full topic with a camera id).",
        "A consumer must check `schema`; boxes and landmarks are frame pixels; `probs` are in `classes.json` order.",
        "",
        "A face smaller than `tracking.min_face_px` (shorter box side) or blurrier than `tracking.blur_threshold` "
        "(variance of the Laplacian) is published but not classified: `label`, `confidence` and `probs` are null "
        "and `skipped` says why. With `tracking.enabled`, faces carry a `track_id` (null while tentative) and "
        "per-track smoothed probabilities, and track events go to `events.v1.<camera_id>`.",
        "",
        f"## `{EMOTION_TOPIC_PREFIX}<camera_id>`: one per processed frame",
        "",
        *_fields_table(EmotionMessage),
        "",
        "Each face:",
        "",
        *_fields_table(FaceMessage),
        "",
        "Example:",
        "",
        "```json",
        json.dumps(json.loads(encode(em)), indent=2),
        "```",
        "",
        f"## `{STATUS_TOPIC_PREFIX}<camera_id>`: every `publisher.status_interval_s` seconds",
        "",
        *_fields_table(StatusMessage),
        "",
        "Example:",
        "",
        "```json",
        json.dumps(json.loads(encode(st)), indent=2),
        "```",
        "",
        f"## `{EVENTS_TOPIC_PREFIX}<camera_id>`: face track events",
        "",
        "A track is confirmed (`new`, and its faces get the `track_id`) after `tracking.min_hits` consecutive "
        "frames; `update` when its smoothed label changes; `end` when it has not been seen for "
        "`tracking.max_age_s` seconds, the source ended or the daemon stopped (SIGTERM, a reload). Tentative tracks "
        "cause no event.",
        "",
        *_fields_table(EventMessage),
        "",
        "Examples (`new`, `update`, `end` of one track):",
        "",
        *[line for e in ev for line in ("```json", json.dumps(json.loads(encode(e)), indent=2), "```", "")],
    ]
    return "\n".join(out)


if __name__ == "__main__":
    print(render_docs(), end="")
