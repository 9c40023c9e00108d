"""The systemd unit (directives, `systemd-analyze verify`/`security`) and the example config (no drift)."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

from edge_agent.paths import INSTALLED_MODELS_DIR, default_models_dir
from edge_agent.settings import Settings, load_settings

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "edge-agent.service"
EXAMPLE = REPO / "systemd" / "config.example.toml"
ANALYZE = shutil.which("systemd-analyze") or ""
needs_analyze = pytest.mark.skipif(not ANALYZE, reason="systemd-analyze not installed (apt install systemd)")


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> every value assigned (systemd units repeat keys)."""
    out: dict[str, dict[str, list[str]]] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            out.setdefault(section, {})
            continue
        key, _, value = line.partition("=")
        out[section].setdefault(key.strip(), []).append(value.strip())
    return out


def _gen_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_config_example", REPO / "systemd" / "gen_config_example.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_unit_directives() -> None:
    u = parse_unit(UNIT.read_text())
    unit, svc, install = u["Unit"], u["Service"], u["Install"]
    expect = {
        "Type": "notify", "NotifyAccess": "main", "WatchdogSec": "10", "Restart": "on-failure", "RestartSec": "2",
        "ExecReload": "/bin/kill -HUP $MAINPID", "User": "edge-agent", "SupplementaryGroups": "video",
        "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes", "NoNewPrivileges": "yes",
        "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes", "ProtectKernelLogs": "yes",
        "ProtectControlGroups": "yes", "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "CapabilityBoundingSet": "", "DevicePolicy": "closed", "StateDirectory": "edge-agent",
        "ConfigurationDirectory": "edge-agent", "LockPersonality": "yes", "MemoryDenyWriteExecute": "yes",
        "RestrictRealtime": "yes", "RestrictNamespaces": "yes", "SystemCallArchitectures": "native",
        "UMask": "0077",
        "ExecStart": "/opt/edge-agent/venv/bin/edge-agent run --config /etc/edge-agent/config.toml",
    }
    for key, value in expect.items():
        assert svc.get(key) == [value], f"{key}: {svc.get(key)}"
    assert svc["DeviceAllow"] == ["char-video4linux rw", "/dev/hailo0 rw"]
    assert "@system-service" in svc["SystemCallFilter"]
    assert "PrivateDevices" not in svc  # it would hide /dev/video* and /dev/hailo0
    assert "2" in svc["RestartPreventExitStatus"][0].split()  # a config error is not retried
    assert unit["After"] == ["network-online.target"]
    assert "StartLimitIntervalSec" in unit and "StartLimitBurst" in unit
    assert install["WantedBy"] == ["multi-user.target"]
    assert "#After=hailort.service" in UNIT.read_text()


@needs_analyze
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    # verify checks that ExecStart exists: point it at a stand-in executable, everything else as shipped
    stub = tmp_path / "opt" / "edge-agent" / "venv" / "bin" / "edge-agent"
    stub.parent.mkdir(parents=True)
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    unit = tmp_path / "edge-agent.service"
    unit.write_text(UNIT.read_text().replace("/opt/edge-agent/venv", str(stub.parent.parent)))
    proc = subprocess.run([ANALYZE, "verify", str(unit)], check=False, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if "edge-agent.service" in line]
    assert warnings == [], warnings  # unknown keys or bad values are only warnings: none allowed


@needs_analyze
def test_systemd_analyze_security_offline() -> None:
    proc = subprocess.run([ANALYZE, "security", "--offline=yes", str(UNIT)], check=False, capture_output=True,
                          text=True, timeout=60)
    if proc.returncode != 0 and "offline" in proc.stderr.lower():
        pytest.skip(f"this systemd-analyze cannot run security --offline: {proc.stderr.strip()}")
    m = re.search(r"Overall exposure level for edge-agent\.service: ([0-9.]+) (\w+)", proc.stdout)
    assert m is not None, proc.stdout[-2000:] + proc.stderr
    assert float(m.group(1)) <= 2.5 and m.group(2) == "OK", m.group(0)


def test_config_example_is_generated_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("EDGE_AGENT_"):
            monkeypatch.delenv(key)
    expected = _gen_module().render()
    assert EXAMPLE.read_text() == expected, (
        "systemd/config.example.toml is out of date: run "
        "`.venv/bin/python systemd/gen_config_example.py > systemd/config.example.toml`"
    )


def test_config_example_documents_every_key_with_its_default(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("EDGE_AGENT_"):
            monkeypatch.delenv(key)
    lines = EXAMPLE.read_text().splitlines()
    # uncommenting every "#key = value" line gives a valid config equal to the defaults
    enabled: list[str] = []
    seen: set[str] = set()
    section = ""
    for i, line in enumerate(lines):
        if line.startswith("["):
            section = line.strip("[]")
            enabled.append(line)
        m = re.match(r"^#([a-z_]+) = (.*)$", line)
        if m:
            key = f"{section}.{m.group(1)}"
            seen.add(key)
            assert lines[i - 1].startswith("# "), f"{key} has no meaning line above it"
            if "(unset by default)" not in m.group(2):
                enabled.append(line[1:])
    cfg = tmp_path / "all.toml"
    cfg.write_text("\n".join(enabled) + "\n")
    tomllib.loads(cfg.read_text())
    defaults = Settings()
    loaded = load_settings(cfg).model_dump()
    want = defaults.model_dump()
    for sec in ("detector", "classifier"):  # the example names the installed model locations
        for key in ("model", "hailo_model"):
            rel = Path(want[sec][key]).relative_to(default_models_dir())
            assert loaded[sec][key] == INSTALLED_MODELS_DIR / rel
            loaded[sec][key] = want[sec][key]
    assert loaded == want

    def leaves(model: object, prefix: str) -> set[str]:
        out: set[str] = set()
        for name in type(model).model_fields:  # type: ignore[attr-defined]
            value = getattr(model, name)
            if hasattr(type(value), "model_fields"):
                out |= leaves(value, f"{prefix}{name}.")
            else:
                out.add(f"{prefix}{name}")
        return out

    assert seen == leaves(defaults, "")


def test_generator_runs_as_a_script() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_AGENT_")}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run([sys.executable, str(REPO / "systemd" / "gen_config_example.py")], capture_output=True,
                          text=True, env=env, timeout=60, check=True)
    assert proc.stdout == EXAMPLE.read_text()
