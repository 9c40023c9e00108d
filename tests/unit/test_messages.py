"""The wire schema: round trips through JSON bytes, strictness, topics, and docs/messages.md staying generated."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from edge_agent.frames import Detections, Expressions
from edge_agent.messages import (
    EmotionMessage,
    StatusMessage,
    decode,
    emotion_topic,
    encode,
    example_emotion,
    example_status,
    render_docs,
    status_topic,
)
from edge_agent.pipeline import face_messages

DOCS = Path(__file__).resolve().parents[2] / "docs" / "messages.md"


def test_emotion_round_trip() -> None:
    msg = example_emotion()
    raw = encode(msg)
    data = json.loads(raw)
    assert data["schema"] == 1 and "schema_version" not in data
    assert list(data) == ["schema", "camera_id", "seq", "frame_id", "t_capture", "t_publish", "latency_ms",
                          "size", "backend", "faces"]
    back = decode(emotion_topic("cam0"), raw)
    assert back == msg
    assert list(back.faces[0].probs) == list(msg.faces[0].probs)  # classes.json order survives


def test_status_round_trip() -> None:
    msg = example_status()
    raw = encode(msg)
    back = decode(status_topic("cam0").encode(), raw)
    assert isinstance(back, StatusMessage) and back == msg
    assert json.loads(raw)["latency_ms"]["end_to_end"]["p95"] == pytest.approx(16.0 * 1.3)


def test_unknown_fields_and_bad_values_are_rejected() -> None:
    data = json.loads(encode(example_emotion()))
    with pytest.raises(ValidationError, match="extra"):
        EmotionMessage.model_validate({**data, "surprise": 1})
    with pytest.raises(ValidationError):
        EmotionMessage.model_validate({**data, "schema": 2})
    bad_face = {**data["faces"][0], "landmarks": data["faces"][0]["landmarks"][:4]}
    with pytest.raises(ValidationError):
        EmotionMessage.model_validate({**data, "faces": [bad_face]})
    bad_prob = {**data["faces"][0], "confidence": 1.5}
    with pytest.raises(ValidationError):
        EmotionMessage.model_validate({**data, "faces": [bad_prob]})


def test_unknown_topic() -> None:
    with pytest.raises(ValueError, match="unknown topic"):
        decode("other.v1.cam0", b"{}")


def test_topics() -> None:
    assert emotion_topic("cam7") == "emotion.v1.cam7"
    assert status_topic("cam7") == "status.v1.cam7"


def test_face_messages_from_detections() -> None:
    dets = Detections(
        boxes=np.array([[10.04, 20.0, 110.0, 140.0], [0, 0, 5, 5]], np.float32),
        scores=np.array([0.99, 0.7], np.float32),
        landmarks=np.arange(20, dtype=np.float32).reshape(2, 5, 2),
    )
    probs = np.array([[0.1, 0.7, 0.2], [0.5, 0.25, 0.25]], np.float32)
    faces = face_messages(dets, Expressions(("a", "b", "c"), probs))
    assert [f.label for f in faces] == ["b", "a"]
    assert faces[0].confidence == pytest.approx(0.7, abs=1e-4)
    assert list(faces[0].probs) == ["a", "b", "c"]
    assert faces[0].box == pytest.approx((10.0, 20.0, 110.0, 140.0))
    assert faces[1].landmarks[4] == (18.0, 19.0)
    assert face_messages(Detections.empty(), Expressions(("a",), np.zeros((0, 1), np.float32))) == []


def test_docs_are_generated_from_the_models() -> None:
    assert DOCS.read_text(encoding="utf-8") == render_docs(), (
        "docs/messages.md is stale: run `python -m edge_agent.messages > docs/messages.md`")
    # the examples in the docs validate against the schema
    blocks = DOCS.read_text(encoding="utf-8").split("```json\n")[1:]
    parsed = [json.loads(b.split("```")[0]) for b in blocks]
    EmotionMessage.model_validate(parsed[0])
    StatusMessage.model_validate(parsed[1])
