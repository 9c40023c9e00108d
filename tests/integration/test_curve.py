"""CURVE end to end: the daemon (CLI, real models, a real sample video, ``--once``) publishing on a loopback TCP
endpoint with ``security.curve = true`` forced, read by real SUB sockets: a client whose public key is in the
allow-list receives every message; a client with another key pair and a plain client receive nothing; the
``edge-agent subscribe`` reference client connects with ``--server-key/--client-key``. Also: an exposed endpoint
without keys is refused with a one-line error, and ``allow_insecure_remote`` starts with a WARNING.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from edge_agent.security import client_keys, generate_keypair
from tests.support.daemon import daemon_env
from tests.support.stream import StreamCollector

REPO_ROOT = Path(__file__).resolve().parents[2]
SINGLE_FACE_FRAMES = 72
MAX_STRING = 256
BASE64ISH = re.compile(r"[A-Za-z0-9+/=_\-]{64,}")


def _non_loopback_address() -> str | None:
    """A local non-loopback IPv4 address (a UDP connect picks the route; no packet is sent), else None."""
    for target in ("10.255.255.255", "192.0.2.1", "198.51.100.1"):
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.connect((target, 9))
                addr = str(s.getsockname()[0])
        except OSError:
            continue
        if addr != "0.0.0.0" and not addr.startswith("127."):
            return addr
    return None


def _assert_numbers_and_short_texts(payload: bytes) -> None:
    """Privacy: a published body holds numbers and short texts only (no image, crop or base64 blob)."""

    def walk(v: object, path: str) -> None:
        if isinstance(v, str):
            assert len(v) <= MAX_STRING and not BASE64ISH.search(v), f"{path}: {v[:80]!r}"
        elif isinstance(v, dict):
            for k, x in v.items():
                walk(k, f"{path}.<key>")
                walk(x, f"{path}.{k}")
        elif isinstance(v, list):
            for i, x in enumerate(v):
                walk(x, f"{path}[{i}]")
        else:
            assert v is None or isinstance(v, bool | int | float), f"{path}: {type(v).__name__}"

    assert len(payload) < 16384, f"a {len(payload)}-byte message"
    walk(json.loads(payload), "$")


@pytest.fixture(scope="module")
def models(shipped_model: Callable[[str], Path]) -> dict[str, Path]:
    return {"detector": shipped_model("detector/acwface-dcn"), "classifier": shipped_model("classifier/mnv3s-facex7")}


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    server_pub, server_sec = generate_keypair(tmp_path / "server", "server")
    ok_pub, ok_sec = generate_keypair(tmp_path / "ok", "client-ok")
    _, other_sec = generate_keypair(tmp_path / "other", "client-other")
    clients = tmp_path / "allowed"
    clients.mkdir()
    shutil.copy(ok_pub, clients / "client-ok.key")
    return {"server_pub": server_pub, "server_sec": server_sec, "clients": clients, "ok_sec": ok_sec,
            "other_sec": other_sec}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(models: dict[str, Path], endpoint: str, **security: str) -> dict[str, str]:
    return daemon_env(
        models, endpoint,
        publisher__camera_id="curve",
        publisher__sndhwm="1000",
        publisher__status_interval_s="0.5",
        source__pace="fast",  # every frame is processed (no real-time drops)
        logging__level="INFO",
        **{f"security__{k}": v for k, v in security.items()},
    )


@pytest.mark.slow
def test_curve_daemon_serves_only_the_allowed_client(models: dict[str, Path], asset: Callable[[str], Path],
                                                     pki: dict[str, Path], tmp_path: Path) -> None:
    video = asset("single_face.mp4")
    endpoint = f"tcp://127.0.0.1:{_free_port()}"
    allowed = StreamCollector(endpoint, client_keys(pki["server_pub"], pki["ok_sec"]))
    unknown = StreamCollector(endpoint, client_keys(pki["server_pub"], pki["other_sec"]))
    plain = StreamCollector(endpoint)
    env = _env(models, endpoint, curve="true", server_secret_key=str(pki["server_sec"]),
               allowed_clients_dir=str(pki["clients"]))
    cli_sub = subprocess.Popen(
        [sys.executable, "-m", "edge_agent", "subscribe", "--endpoint", endpoint, "--server-key",
         str(pki["server_pub"]), "--client-key", str(pki["ok_sec"]), "--topic", "emotion.v1.", "--count", "5",
         "--timeout", "60"],
        env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert cli_sub.stderr is not None
        assert cli_sub.stderr.readline().startswith("# subscribed to")  # connected before the daemon starts
        proc = subprocess.run(
            [sys.executable, "-m", "edge_agent", "run", "--source", str(video), "--once", "--backend", "onnx"],
            env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False)
        sub_out, sub_err = cli_sub.communicate(timeout=60)
        time.sleep(0.5)  # let the collectors drain
    finally:
        if cli_sub.poll() is None:
            cli_sub.kill()
            cli_sub.wait()
        for c in (allowed, unknown, plain):
            c.close()
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "CURVE encrypted, allowed clients only" in proc.stderr
    assert "WARNING" not in proc.stderr

    emotions, statuses = allowed.emotions, allowed.statuses
    # The allowed client finished its CURVE handshake while the daemon loaded its models: it gets every frame.
    assert [m.frame_id for m in emotions] == list(range(SINGLE_FACE_FRAMES))
    assert all(len(m.faces) == 1 and m.camera_id == "curve" for m in emotions)
    assert statuses and statuses[-1].state == "ended" and statuses[-1].frames_published == SINGLE_FACE_FRAMES
    for _topic, payload in allowed.raw:  # privacy: numbers and short texts only
        _assert_numbers_and_short_texts(payload)

    assert unknown.raw == [], "a client whose key is not in allowed_clients_dir received messages"
    assert plain.raw == [], "a plain (non-CURVE) client received messages"

    assert cli_sub.returncode == 0, sub_err[-2000:]
    lines = sub_out.splitlines()
    assert len(lines) == 5 and all(line.startswith("curve #") and "1 face" in line for line in lines), lines


def test_exposed_endpoint_without_keys_is_refused(models: dict[str, Path], asset: Callable[[str], Path]) -> None:
    video = asset("single_face.mp4")
    endpoint = f"tcp://0.0.0.0:{_free_port()}"
    proc = subprocess.run(
        [sys.executable, "-m", "edge_agent", "run", "--source", str(video), "--once", "--backend", "onnx"],
        env=_env(models, endpoint), cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"edge-agent: publisher.endpoint {endpoint}: reachable from other hosts")
    assert "security.curve = true" in lines[0] and "allow_insecure_remote" in lines[0]


@pytest.mark.slow
def test_insecure_remote_starts_with_a_warning(models: dict[str, Path], asset: Callable[[str], Path]) -> None:
    addr = _non_loopback_address()
    if addr is None:
        pytest.skip("no non-loopback IPv4 address on this host (the decision function is unit-tested)")
    endpoint = f"tcp://{addr}:{_free_port()}"
    proc = subprocess.run(
        [sys.executable, "-m", "edge_agent", "run", "--source", str(asset("single_face.mp4")), "--once",
         "--backend", "onnx"],
        env=_env(models, endpoint, allow_insecure_remote="true"),
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    warnings = [line for line in proc.stderr.splitlines() if "WARNING" in line and "NOT encrypted" in line]
    assert len(warnings) == 1 and endpoint in warnings[0], proc.stderr[-3000:]
