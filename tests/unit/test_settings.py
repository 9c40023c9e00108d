"""Configuration precedence (defaults < TOML < EDGE_AGENT_* env < flags), unknown keys, bounds, one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.settings import ConfigError, effective_config_toml, load_settings, redact


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.upper().startswith("EDGE_AGENT_") and name.upper() not in ("EDGE_AGENT_CACHE",
                                                                             "EDGE_AGENT_MODELS_DIR"):
            monkeypatch.delenv(name)


def _toml(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "config.toml"
    p.write_text(text, encoding="utf-8")
    return p


def test_defaults_without_a_file(tmp_path: Path) -> None:
    s = load_settings(None)
    assert s.source.uri == "0" and s.backend.kind == "auto" and s.pipeline.queue_size == 2
    assert s.publisher.endpoint == "tcp://127.0.0.1:5556"


def test_precedence_defaults_toml_env_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _toml(tmp_path, """
[source]
uri = "from-toml.mp4"
pace = "fast"
[publisher]
camera_id = "toml_cam"
sndhwm = 32
[backend.onnx]
intra_op_threads = 3
""")
    s = load_settings(cfg)
    assert (s.source.uri, s.source.pace, s.publisher.camera_id, s.publisher.sndhwm) == (
        "from-toml.mp4", "fast", "toml_cam", 32)
    assert s.backend.onnx.intra_op_threads == 3 and s.backend.onnx.spin is False  # deep merge keeps defaults

    monkeypatch.setenv("EDGE_AGENT_SOURCE__URI", "from-env.mp4")
    monkeypatch.setenv("EDGE_AGENT_PUBLISHER__SNDHWM", "64")
    monkeypatch.setenv("EDGE_AGENT_BACKEND__ONNX__SPIN", "true")
    s = load_settings(cfg)
    assert s.source.uri == "from-env.mp4" and s.publisher.sndhwm == 64  # env beats the file
    assert s.source.pace == "fast" and s.publisher.camera_id == "toml_cam"  # the rest of the file still applies
    assert s.backend.onnx.spin is True and s.backend.onnx.intra_op_threads == 3

    s = load_settings(cfg, {"source.uri": "from-flag.mp4", "backend.kind": "onnx", "source.loop": None})
    assert s.source.uri == "from-flag.mp4" and s.backend.kind == "onnx"  # flags beat env
    assert s.publisher.sndhwm == 64 and s.source.loop is False  # a flag not given (None) changes nothing


def test_unknown_key_in_file_names_the_key(tmp_path: Path) -> None:
    cfg = _toml(tmp_path, "[source]\nuri = 'a.mp4'\nframerate = 5\n")
    with pytest.raises(ConfigError) as info:
        load_settings(cfg)
    assert str(info.value) == "source.framerate: unknown key"


def test_unknown_section_in_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^tracker: unknown key$"):
        load_settings(_toml(tmp_path, "[tracker]\nenabled = true\n"))


def test_unknown_env_keys_are_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_AGENT_SOURCE__FRAMERATE", "5")
    with pytest.raises(ConfigError, match=r"^source\.framerate: unknown key$"):
        load_settings(None)
    monkeypatch.delenv("EDGE_AGENT_SOURCE__FRAMERATE")
    monkeypatch.setenv("EDGE_AGENT_SOURCES__URI", "x")  # typo in the section name
    with pytest.raises(ConfigError, match=r"EDGE_AGENT_SOURCES__URI: unknown key"):
        load_settings(None)


def test_non_settings_variables_are_allowed(tmp_path: Path) -> None:
    # EDGE_AGENT_MODELS_DIR is read when edge_agent.settings is imported: check it in a fresh interpreter.
    import os
    import subprocess
    import sys

    env = {**os.environ, "EDGE_AGENT_MODELS_DIR": str(tmp_path), "EDGE_AGENT_CACHE": str(tmp_path / "c")}
    code = "from edge_agent.settings import load_settings; print(load_settings(None).detector.model)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parents[2], check=True)
    assert out.stdout.strip() == str(tmp_path / "detector" / "acwface-dcn")


@pytest.mark.parametrize(
    ("key", "value", "where"),
    [
        ("pipeline.queue_size", 0, "pipeline.queue_size"),
        ("detector.score_threshold", 1.5, "detector.score_threshold"),
        ("publisher.sndhwm", 0, "publisher.sndhwm"),
        ("publisher.endpoint", "localhost:5556", "publisher.endpoint"),
        ("publisher.camera_id", "cam 0", "publisher.camera_id"),
        ("source.fourcc", "mjpeg", "source.fourcc"),
        ("backend.kind", "gpu", "backend.kind"),
        ("source.read_timeout_s", 0, "source.read_timeout_s"),
    ],
)
def test_bounds_give_one_line_naming_the_key(key: str, value: object, where: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(None, {key: value})
    msg = str(info.value)
    assert msg.startswith(f"{where}: ") and "\n" not in msg


def test_bounds_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_AGENT_PIPELINE__QUEUE_SIZE", "0")
    with pytest.raises(ConfigError, match=r"^pipeline\.queue_size: .*greater than or equal to 1"):
        load_settings(None)


def test_missing_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_settings(_toml(tmp_path, "[source\nuri="))


def test_effective_config_redacts_credentials(tmp_path: Path) -> None:
    s = load_settings(None, {"source.uri": "rtsp://admin:hunter2@10.0.0.5/s1"})
    text = effective_config_toml(s)
    assert "hunter2" not in text and 'uri = "rtsp://admin:***@10.0.0.5/s1"' in text
    assert redact("rtsp://u:p@h/x") == "rtsp://u:***@h/x"
    import tomllib

    assert tomllib.loads(text)["source"]["uri"] == "rtsp://admin:***@10.0.0.5/s1"


def test_detect_workers_need_full_mode_with_a_one_line_error() -> None:
    assert load_settings(None, {"pipeline.detect_workers": 2}).pipeline.detect_workers == 2
    with pytest.raises(ConfigError, match=r'^pipeline\.detect_workers = 2 needs detector\.mode = "full"'):
        load_settings(None, {"pipeline.detect_workers": 2, "detector.mode": "fast"})
    with pytest.raises(ConfigError, match=r"^pipeline\.detect_workers: Input should be less than or equal to 4$"):
        load_settings(None, {"pipeline.detect_workers": 5})
