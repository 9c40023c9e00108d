"""The command line: exit codes, one-line errors, check-config, subscribe against a real PUB socket, samples."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from edge_agent.cli import main, run_overrides
from edge_agent.messages import emotion_topic, encode, example_emotion, example_status, status_topic
from edge_agent.publisher import Publisher

REPO_ROOT = Path(__file__).resolve().parents[2]
FAKES = REPO_ROOT / "tests" / "fakes"


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    pytest.importorskip("onnx")
    from tests.fakes import fake_hef as fh

    root = tmp_path_factory.mktemp("cli_models")
    return {"det": fh.make_tiny_detector(root / "det"), "cls": fh.make_tiny_classifier(root / "cls")}


def _env(tiny: dict[str, Path], **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_AGENT_") or k == "EDGE_AGENT_CACHE"}
    env.update({
        "EDGE_AGENT_DETECTOR__MODEL": str(tiny["det"]),
        "EDGE_AGENT_CLASSIFIER__MODEL": str(tiny["cls"]),
        "EDGE_AGENT_BACKEND__KIND": "onnx",
        **extra,
    })
    return env


def _cli(args: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge_agent", *args], check=False, env=env, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=timeout)


def test_help_and_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "check-config" in capsys.readouterr().out
    assert main(["frobnicate"]) == 2
    assert main(["run", "--backend", "gpu"]) == 2


def test_run_overrides() -> None:
    assert run_overrides(None, None, False) == {}
    assert run_overrides("sample:single_face.mp4", "onnx", True) == {
        "source.uri": "sample:single_face.mp4", "backend.kind": "onnx", "source.loop": False}


def test_check_config_prints_config_and_ok_lines(tiny_models: dict[str, Path]) -> None:
    out = _cli(["check-config"], _env(tiny_models))
    assert out.returncode == 0, out.stderr
    assert "[source]" in out.stdout and 'kind = "onnx"' in out.stdout
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith(("OK", "PROBLEM"))]
    assert len(lines) == 2 and all(ln.startswith("OK") for ln in lines)
    assert "tiny-det" in lines[0] and "tiny-cls" in lines[1]


def test_check_config_reports_a_broken_model(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    out = _cli(["check-config"], _env(tiny_models, EDGE_AGENT_CLASSIFIER__MODEL=str(tmp_path)))
    assert out.returncode == 3
    problems = [ln for ln in out.stdout.splitlines() if ln.startswith("PROBLEM")]
    assert len(problems) == 1 and "classifier" in problems[0] and "manifest not found" in problems[0]


def test_bad_config_file_is_one_line_exit_2(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[publisher]\nsndhwm = 0\n")
    out = _cli(["check-config", "--config", str(cfg)], _env(tiny_models))
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == ["edge-agent: publisher.sndhwm: Input should be greater than or "
                                               "equal to 1"]
    cfg.write_text("[publisher]\nsndhw = 3\n")
    out = _cli(["run", "--config", str(cfg)], _env(tiny_models))
    assert out.returncode == 2 and out.stderr.strip() == "edge-agent: publisher.sndhw: unknown key"


def test_run_missing_source_exits_4_without_traceback(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    missing = tmp_path / "no_such_video.mp4"
    out = _cli(["run", "--source", str(missing), "--once"],
               _env(tiny_models, EDGE_AGENT_PUBLISHER__ENDPOINT=f"ipc://{tmp_path}/p.sock"))
    assert out.returncode == 4, out.stderr
    assert "no_such_video.mp4" in out.stderr and "Traceback" not in out.stderr


def test_run_busy_endpoint_exits_2_naming_it(tiny_models: dict[str, Path], asset: Callable[[str], Path]) -> None:
    busy = Publisher("tcp://127.0.0.1:*")
    try:
        out = _cli(["run", "--source", str(asset("single_face.mp4")), "--once"],
                   _env(tiny_models, EDGE_AGENT_PUBLISHER__ENDPOINT=busy.endpoint))
    finally:
        busy.close()
    assert out.returncode == 2, out.stderr
    assert busy.endpoint in out.stderr and "Traceback" not in out.stderr


def _subscribe_while_publishing(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    pub = Publisher("tcp://127.0.0.1:*")
    result: dict[str, int] = {}
    t = threading.Thread(target=lambda: result.setdefault("rc", main(["subscribe", "--endpoint", pub.endpoint,
                                                                         *args])))
    t.start()
    deadline = time.monotonic() + 10
    em, st = encode(example_emotion()), encode(example_status())
    while t.is_alive() and time.monotonic() < deadline:
        pub.send(emotion_topic("cam0"), em)
        pub.send(status_topic("cam0"), st)
        time.sleep(0.02)
    t.join(5)
    pub.close()
    return result["rc"], capsys.readouterr().out


def test_subscribe_prints_readable_lines(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = _subscribe_while_publishing(["--count", "4"], capsys)
    assert rc == 0
    lines = out.splitlines()
    assert len(lines) == 4
    assert "cam0 #812 2 faces | id 3 happy 0.91 ~happy [250,61,373,220] | too_small [20,40,38,61] | 23.1 ms" in lines
    assert any(ln.startswith("cam0 status running | onnx | in 25.0 fps, out 24.9 fps") for ln in lines)


def test_subscribe_json_and_topic_filter(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = _subscribe_while_publishing(["--json", "--topic", "status.v1.", "--count", "2"], capsys)
    assert rc == 0
    lines = out.splitlines()
    assert len(lines) == 2 and all(ln.startswith('{"schema":1,"camera_id":"cam0","t":') for ln in lines)


def test_subscribe_timeout_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    pub = Publisher("tcp://127.0.0.1:*")
    try:
        t0 = time.monotonic()
        rc = main(["subscribe", "--endpoint", pub.endpoint, "--timeout", "0.5"])
    finally:
        pub.close()
    assert rc == 1 and time.monotonic() - t0 < 5
    assert "no message" in capsys.readouterr().err


def test_samples(capsys: pytest.CaptureFixture[str], asset: Callable[[str], Path]) -> None:
    path = asset("single_face.mp4")
    assert main(["samples", "fetch", "single_face.mp4"]) == 0
    assert capsys.readouterr().out.strip() == str(path)
    assert main(["samples", "list"]) == 0
    listing = capsys.readouterr().out
    assert "face_noface.mov" in listing and "retinaface" not in listing
    assert main(["samples"]) == 0 and "single_face.mp4" in capsys.readouterr().out
    assert main(["samples", "fetch", "nope.mp4"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown sample 'nope.mp4'" in err
