"""Bad model artifacts: ``edge-agent run`` and ``check-config`` refuse to start with one clear line, exit code 3.

Each case copies the shipped models to a temporary directory, breaks one thing (a missing, truncated or swapped
model file, a wrong sha256, wrong I/O names in the manifest, labels that differ from classes.json, a manifest
that is not JSON, a missing manifest), and runs the real CLI in a subprocess, as systemd would.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from edge_agent.errors import ExitCode

REPO_ROOT = Path(__file__).resolve().parents[2]
DETECTOR = "detector/acwface-dcn"
CLASSIFIER = "classifier/mnv3s-facex7"

Breaker = Callable[[Path, Path], str]  # (detector dir, classifier dir) -> a word the error line must contain


def _manifest(d: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads((d / "manifest.json").read_text())
    return data


def _write_manifest(d: Path, data: dict[str, object]) -> None:
    (d / "manifest.json").write_text(json.dumps(data, indent=2))


def _model_file(d: Path) -> Path:
    return d / str(_manifest(d)["file"])


def missing_model_file(det: Path, cls: Path) -> str:
    _model_file(det).unlink()
    return "missing"


def truncated_model_file(det: Path, cls: Path) -> str:
    f = _model_file(cls)
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    return "bytes"


def wrong_sha256(det: Path, cls: Path) -> str:
    f = _model_file(det)
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, different content
    f.write_bytes(bytes(data))
    return "sha256"


def wrong_input_name(det: Path, cls: Path) -> str:
    m = _manifest(cls)
    inputs = m["inputs"]
    assert isinstance(inputs, list)
    inputs[0]["name"] = "not_the_input"
    _write_manifest(cls, m)
    return "not_the_input"


def swapped_model_file(det: Path, cls: Path) -> str:
    """The detector's manifest points at the classifier's network (sha256 and size updated to match it)."""
    target = _model_file(det)
    shutil.copyfile(_model_file(cls), target)
    m = _manifest(det)
    data = target.read_bytes()
    m["sha256"] = hashlib.sha256(data).hexdigest()
    m["size_bytes"] = len(data)
    _write_manifest(det, m)
    return "does not match"


def labels_differ_from_classes(det: Path, cls: Path) -> str:
    classes = json.loads((cls / "classes.json").read_text())
    assert isinstance(classes, list) and len(classes) >= 2
    classes[0], classes[1] = classes[1], classes[0]
    (cls / "classes.json").write_text(json.dumps(classes))
    return "differs"


def manifest_not_json(det: Path, cls: Path) -> str:
    (det / "manifest.json").write_text('{"model_id": "acwface-dcn", ')
    return "JSON"


def manifest_missing(det: Path, cls: Path) -> str:
    (cls / "manifest.json").unlink()
    return "manifest not found"


CASES: list[Breaker] = [missing_model_file, truncated_model_file, wrong_sha256, wrong_input_name,
                        swapped_model_file, labels_differ_from_classes, manifest_not_json, manifest_missing]


@pytest.fixture
def broken_models(request: pytest.FixtureRequest, tmp_path: Path,
                  shipped_model: Callable[[str], Path]) -> tuple[Path, Path, str]:
    det = tmp_path / "det"
    cls = tmp_path / "cls"
    shutil.copytree(shipped_model(DETECTOR), det)
    shutil.copytree(shipped_model(CLASSIFIER), cls)
    breaker: Breaker = request.param
    word = breaker(det, cls)
    return det, cls, word


def _cli(args: list[str], det: Path, cls: Path, source: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_AGENT_") or k == "EDGE_AGENT_CACHE"}
    env.update({
        "EDGE_AGENT_DETECTOR__MODEL": str(det),
        "EDGE_AGENT_CLASSIFIER__MODEL": str(cls),
        "EDGE_AGENT_BACKEND__KIND": "onnx",
        "EDGE_AGENT_SOURCE__URI": str(source),
        "EDGE_AGENT_PUBLISHER__ENDPOINT": f"ipc://{source.parent}/bad-artifacts.sock",
    })
    return subprocess.run([sys.executable, "-m", "edge_agent", *args], env=env, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("broken_models", CASES, indirect=True, ids=[c.__name__ for c in CASES])
def test_run_refuses_with_one_line_and_exit_3(broken_models: tuple[Path, Path, str],
                                              asset: Callable[[str], Path]) -> None:
    det, cls, word = broken_models
    proc = _cli(["run", "--once"], det, cls, asset("single_face.mp4"))
    assert proc.returncode == ExitCode.MODEL_ERROR, proc.stderr
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    errors = [line for line in proc.stderr.splitlines() if "cannot start" in line]
    assert len(errors) == 1, proc.stderr
    assert word in errors[0], errors[0]
    assert "opened" not in proc.stderr  # refused before the source was opened or anything published


@pytest.mark.parametrize("broken_models", CASES, indirect=True, ids=[c.__name__ for c in CASES])
def test_check_config_reports_the_problem_and_exits_3(broken_models: tuple[Path, Path, str],
                                                      asset: Callable[[str], Path]) -> None:
    det, cls, word = broken_models
    proc = _cli(["check-config"], det, cls, asset("single_face.mp4"))
    assert proc.returncode == ExitCode.MODEL_ERROR, proc.stderr
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    problems = [line for line in proc.stdout.splitlines() if line.startswith("PROBLEM ")]
    assert len(problems) == 1, proc.stdout[-2000:]
    assert word in problems[0], problems[0]
    oks = [line for line in proc.stdout.splitlines() if line.startswith("OK ")]
    assert len(oks) == 1  # the other model is fine and says so
