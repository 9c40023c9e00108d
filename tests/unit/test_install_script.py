"""systemd/install.sh and uninstall.sh into a temporary root (no user creation, no systemctl, no PyPI deps)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / "systemd" / "install.sh"
UNINSTALL = REPO / "systemd" / "uninstall.sh"
ANALYZE = shutil.which("systemd-analyze") or ""
PYTHON = shutil.which("python3") or ""
TEST_FLAGS = ["--no-user", "--no-systemctl", "--no-deps"]


def _run(script: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EDGE_AGENT_", "VIRTUAL_ENV", "PYTHON"))}
    return subprocess.run(["sh", str(script), *args], capture_output=True, text=True, env=env, timeout=600,
                          check=False)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _shipped_models() -> list[Path]:
    return sorted(p.parent for p in (REPO / "models").glob("*/*/manifest.json"))


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    if not PYTHON:
        pytest.skip("no python3 on PATH for the venv")
    if not _shipped_models():
        pytest.skip("no models/*/*/manifest.json in this checkout yet")
    root = tmp_path_factory.mktemp("root")
    proc = _run(INSTALL, "--root", str(root), *TEST_FLAGS)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    yield root


def test_scripts_parse() -> None:
    for script in (INSTALL, UNINSTALL):
        assert subprocess.run(["sh", "-n", str(script)], check=False).returncode == 0
        assert os.access(script, os.X_OK), f"{script} is not executable"


def test_bad_options_fail_with_a_message(tmp_path: Path) -> None:
    proc = _run(INSTALL, "--frobnicate")
    assert proc.returncode != 0 and "unknown option --frobnicate" in proc.stderr
    proc = _run(INSTALL, "--root", str(tmp_path), "--source", str(tmp_path), *TEST_FLAGS)
    assert proc.returncode != 0 and "not an edge-agent checkout" in proc.stderr
    proc = _run(INSTALL, "--root", str(tmp_path), "--prefix", "relative/dir", *TEST_FLAGS)
    assert proc.returncode != 0 and "absolute path" in proc.stderr
    assert not (tmp_path / "etc").exists()


@pytest.mark.slow
def test_install_produces_the_expected_tree(installed: Path) -> None:
    venv = installed / "opt" / "edge-agent" / "venv"
    assert "include-system-site-packages = true" in (venv / "pyvenv.cfg").read_text()
    assert os.access(venv / "bin" / "edge-agent", os.X_OK)
    # the installed package finds the installed models (edge_agent/paths.py)
    out = subprocess.run([str(venv / "bin" / "python"), "-c",
                          "from edge_agent.paths import default_models_dir; print(default_models_dir())"],
                         capture_output=True, text=True, check=True, cwd=installed,
                         env={"PATH": "/usr/bin:/bin"}).stdout.strip()
    assert out == "/usr/share/edge-agent/models"
    for src in _shipped_models():
        rel = src.relative_to(REPO / "models")
        dst = installed / "usr" / "share" / "edge-agent" / "models" / rel
        for f in src.iterdir():
            assert _sha(dst / f.name) == _sha(f), f"{rel}/{f.name} differs"
    cfg = installed / "etc" / "edge-agent" / "config.toml"
    assert cfg.read_text() == (REPO / "systemd" / "config.example.toml").read_text()
    assert oct(cfg.stat().st_mode & 0o777) == "0o640"
    unit = installed / "etc" / "systemd" / "system" / "edge-agent.service"
    assert unit.read_text() == (REPO / "systemd" / "edge-agent.service").read_text()
    assert (installed / "usr" / "share" / "doc" / "edge-agent" / "config.example.toml").is_file()


@pytest.mark.slow
@pytest.mark.skipif(not ANALYZE, reason="systemd-analyze not installed (apt install systemd)")
def test_installed_unit_verifies(installed: Path, tmp_path: Path) -> None:
    # verify checks that ExecStart exists: point the installed unit at the venv inside the temporary root
    venv = installed / "opt" / "edge-agent" / "venv"
    unit = tmp_path / "edge-agent.service"
    unit.write_text((installed / "etc/systemd/system/edge-agent.service").read_text()
                    .replace("/opt/edge-agent/venv", str(venv)))
    proc = subprocess.run([ANALYZE, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert [line for line in proc.stderr.splitlines() if "edge-agent.service" in line] == []


@pytest.mark.slow
def test_reinstall_is_idempotent_and_keeps_the_config(installed: Path) -> None:
    cfg = installed / "etc" / "edge-agent" / "config.toml"
    cfg.write_text('[detector]\nscore_threshold = 0.7\n')
    stale = installed / "usr/share/edge-agent/models/detector/retinaface-mnet025/stale.bin"
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_bytes(b"old")
    proc = _run(INSTALL, "--root", str(installed), *TEST_FLAGS)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "reusing" in proc.stdout and "keeping existing" in proc.stdout
    assert cfg.read_text() == '[detector]\nscore_threshold = 0.7\n'
    assert not stale.exists()  # model directories are replaced, not merged


@pytest.mark.slow
def test_prefix_rewrites_execstart(tmp_path: Path) -> None:
    if not _shipped_models():
        pytest.skip("no models yet")
    proc = _run(INSTALL, "--root", str(tmp_path), "--prefix", "/srv/ea", *TEST_FLAGS)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    unit = (tmp_path / "etc/systemd/system/edge-agent.service").read_text()
    assert "ExecStart=/srv/ea/venv/bin/edge-agent run --config /etc/edge-agent/config.toml" in unit
    assert os.access(tmp_path / "srv/ea/venv/bin/edge-agent", os.X_OK)

    # uninstall keeps the configuration; --purge removes it
    proc = _run(UNINSTALL, "--root", str(tmp_path), "--prefix", "/srv/ea", "--no-systemctl")
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "srv/ea").exists()
    assert not (tmp_path / "etc/systemd/system/edge-agent.service").exists()
    assert not (tmp_path / "usr/share/edge-agent").exists()
    assert (tmp_path / "etc/edge-agent/config.toml").is_file()
    proc = _run(UNINSTALL, "--root", str(tmp_path), "--prefix", "/srv/ea", "--no-systemctl", "--purge")
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "etc/edge-agent").exists()
