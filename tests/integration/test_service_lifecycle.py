"""The real daemon as a subprocess under a stand-in service manager.

``python -m edge_agent run`` with NOTIFY_SOCKET pointed at a test datagram socket, WATCHDOG_USEC set and an ipc://
publisher endpoint read by a real ZeroMQ SUB: READY after warm-up, WATCHDOG pings while a looping video plays,
SIGHUP applying a changed config file, STOPPING and exit 0 on SIGTERM within 2 s; ``--once`` ending with exit 0.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from tests.support.daemon import daemon_env
from tests.support.notify import NotifyListener

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 120.0  # model load + warm-up on a busy 2-core box

pytestmark = pytest.mark.slow


@pytest.fixture
def notify() -> Iterator[NotifyListener]:
    lst = NotifyListener()
    yield lst
    lst.close()


def _write_config(path: Path, endpoint: str, score_threshold: float, log_format: str = "plain",
                  source_extra: str = "") -> None:
    path.write_text(
        "[backend]\nkind = \"onnx\"\n"
        f"[detector]\nscore_threshold = {score_threshold}\n"
        f"[publisher]\nendpoint = \"{endpoint}\"\n"
        f"[source]\nloop = true\n{source_extra}"
        f"[logging]\nformat = \"{log_format}\"\nlevel = \"INFO\"\n",
        encoding="utf-8",
    )


def _spawn(args: list[str], notify: NotifyListener, log_path: Path, journal: bool = False) -> subprocess.Popen[bytes]:
    env = daemon_env()
    env.update(NOTIFY_SOCKET=notify.name, WATCHDOG_USEC="2000000", PYTHONPATH=str(REPO))
    env.pop("WATCHDOG_PID", None)
    with open(log_path, "wb") as log:
        if journal:  # as systemd does: $JOURNAL_STREAM names the device:inode of our stderr
            st = os.fstat(log.fileno())
            env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
        return subprocess.Popen([sys.executable, "-m", "edge_agent", "run", *args], cwd=REPO, env=env,
                                stdout=log, stderr=subprocess.STDOUT)


def _recv_messages(sub: zmq.Socket[bytes], duration: float) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        if sub.poll(100):
            topic, body = sub.recv_multipart()
            assert topic == b"emotion.v1.cam0"
            out.append(json.loads(body))
    return out


def _drain(sub: zmq.Socket[bytes]) -> None:
    while sub.poll(0):
        sub.recv_multipart()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_ready_watchdog_reload_and_sigterm(
    tmp_path: Path, notify: NotifyListener, asset: Callable[[str], Path]
) -> None:
    video = asset("single_face.mp4")
    endpoint = f"ipc://{tmp_path}/pub.sock"
    cfg = tmp_path / "config.toml"
    _write_config(cfg, endpoint, 0.5)
    log_path = tmp_path / "daemon.log"
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"emotion.v1.")
    sub.setsockopt(zmq.LINGER, 0)
    sub.connect(endpoint)  # connects once the daemon binds, and again after a reload rebinds
    t_spawn = time.monotonic()
    proc = _spawn(["--config", str(cfg), "--source", str(video)], notify, log_path)
    try:
        t_ready = notify.wait_for("READY=1", t_spawn, READY_TIMEOUT_S, proc)

        # frames flow: messages with the face, and watchdog pings (every ~1 s for WATCHDOG_USEC=2 s)
        before = _recv_messages(sub, 3.5)
        assert len(before) >= 10, f"only {len(before)} messages in 3.5 s"
        assert sum(1 for m in before if m["faces"]) >= len(before) // 2
        assert notify.count("WATCHDOG=1", t_ready, time.monotonic()) >= 2
        assert any(m.startswith("STATUS=running") for _, m in notify.snapshot())

        # SIGHUP with a threshold above every face score in this video (max 0.997): no faces from then on
        _write_config(cfg, endpoint, 0.999)
        t_hup = time.monotonic()
        proc.send_signal(signal.SIGHUP)
        t_reloading = notify.wait_for("RELOADING=1\nMONOTONIC_USEC=", t_hup, 10, proc)
        t_ready2 = notify.wait_for("READY=1", t_reloading, READY_TIMEOUT_S, proc)
        _drain(sub)  # what the old pipeline sent (it was closed before the new one started)
        after = _recv_messages(sub, 3.0)
        assert len(after) >= 5, f"only {len(after)} messages after the reload"
        assert all(m["faces"] == [] for m in after)
        assert min(m["seq"] for m in after) < max(m["seq"] for m in before)  # a new pipeline (seq restarted)
        assert notify.count("WATCHDOG=1", t_ready2, time.monotonic()) >= 1
        assert proc.poll() is None  # same process

        # SIGTERM: STOPPING and exit 0 within 2 s
        t_term = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=10)
        elapsed = time.monotonic() - t_term
        log_text = log_path.read_text(errors="replace")
        assert rc == 0, log_text
        assert elapsed < 2.0, f"exit took {elapsed:.2f} s"
        assert any(t > t_term and m.startswith("STOPPING=1") for t, m in notify.snapshot())
        assert "reloaded: new configuration running" in log_text
    finally:
        _stop(proc)
        sub.close()
        ctx.term()


def test_once_ends_with_exit_0_at_end_of_file(
    tmp_path: Path, notify: NotifyListener, asset: Callable[[str], Path]
) -> None:
    video = asset("single_face.mp4")  # 72 frames, ~2.4 s at its native rate
    cfg = tmp_path / "config.toml"
    _write_config(cfg, f"ipc://{tmp_path}/pub.sock", 0.5, log_format="auto")
    log_path = tmp_path / "daemon.log"
    t_spawn = time.monotonic()
    proc = _spawn(["--config", str(cfg), "--source", str(video), "--once"], notify, log_path, journal=True)
    try:
        rc = proc.wait(timeout=READY_TIMEOUT_S)
        log_text = log_path.read_text(errors="replace")
        assert rc == 0, log_text
        msgs = [m for t, m in notify.snapshot() if t > t_spawn]
        ready = next(i for i, m in enumerate(msgs) if m.startswith("READY=1"))
        assert any(m.startswith("STOPPING=1") and "source ended" in m for m in msgs[ready:])
        assert "source ended after" in log_text
        # journald format under systemd (auto): a syslog priority on every line, no timestamps
        assert "<6>edge_agent.service: ready: publishing on ipc://" in log_text
        lines = [line for line in log_text.splitlines() if line]
        assert all(re.match(r"^<[0-7]>", line) for line in lines), lines[:5]
    finally:
        _stop(proc)


_MDWE_EXEC = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
    sys.exit(77)
os.execv(sys.argv[1], sys.argv[1:])
"""


def _mdwe_supported() -> bool:
    probe = subprocess.run([sys.executable, "-c", _MDWE_EXEC, "/bin/true"], check=False)
    return probe.returncode == 0


def test_runs_with_write_xor_execute_enforced(
    tmp_path: Path, notify: NotifyListener, asset: Callable[[str], Path]
) -> None:
    """The unit sets MemoryDenyWriteExecute=yes: the kernel's PR_SET_MDWE applies the same rule (no W+X mappings,
    no mprotect adding PROT_EXEC); the daemon must load both models and process a file under it."""
    if not _mdwe_supported():
        pytest.skip("kernel without PR_SET_MDWE (Linux >= 6.3)")
    video = asset("single_face.mp4")
    cfg = tmp_path / "config.toml"
    _write_config(cfg, f"ipc://{tmp_path}/pub.sock", 0.5)
    env = daemon_env()
    env.update(NOTIFY_SOCKET=notify.name, PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-c", _MDWE_EXEC, sys.executable, "-c",
           "import ctypes, sys; assert ctypes.CDLL(None).prctl(66, 0, 0, 0, 0) == 1, 'MDWE not inherited'; "
           "from edge_agent.cli import main; sys.exit(main(sys.argv[1:]))",
           "run", "--config", str(cfg), "--source", str(video), "--once"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=READY_TIMEOUT_S,
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"source ended after [1-9][0-9]* frames", proc.stderr), proc.stderr
    assert any(m.startswith("READY=1") for _, m in notify.snapshot())


def test_no_watchdog_pings_while_frames_stall(
    tmp_path: Path, notify: NotifyListener, asset: Callable[[str], Path]
) -> None:
    """A source that stops delivering (here: an image folder paced at one frame per 10 s) stops the pings, so
    systemd's WatchdogSec would restart a daemon whose camera or accelerator hung."""
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(3):  # played once (loop = false): frames at 0 s, 10 s, 20 s
        shutil.copy(asset("single_face.jpg"), folder / f"{i:04d}.jpg")
    cfg = tmp_path / "config.toml"
    _write_config(cfg, f"ipc://{tmp_path}/pub.sock", 0.5, source_extra="folder_fps = 0.1\n")
    cfg.write_text(cfg.read_text().replace("loop = true", "loop = false"))
    log_path = tmp_path / "daemon.log"
    t_spawn = time.monotonic()
    proc = _spawn(["--config", str(cfg), "--source", str(folder)], notify, log_path)  # WATCHDOG_USEC = 2 s
    try:
        t_ready = notify.wait_for("READY=1", t_spawn, READY_TIMEOUT_S, proc)
        time.sleep(7.0)
        assert proc.poll() is None
        pings = [t - t_ready for t, m in notify.snapshot() if t > t_ready and m == "WATCHDOG=1"]
        # the first frame earns one ping about a second after READY (the watchdog is live); then silence until
        # the next frame at 10 s
        assert len(pings) == 1 and pings[0] <= 2.5, pings
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0, log_path.read_text(errors="replace")
    finally:
        _stop(proc)


# Apply the unit's SystemCallFilter= lines as systemd does (allow list; "~" lines removed from it; everything else
# fails with EPERM as SystemCallErrorNumber=EPERM says), plus NoNewPrivileges and W^X, then exec the daemon.
_SECCOMP_EXEC = r"""
import ctypes, os, subprocess, sys
unit_file, argv = sys.argv[1], sys.argv[2:]
listing = subprocess.run(["systemd-analyze", "syscall-filter"], capture_output=True, text=True, check=True).stdout
groups, cur = {}, None
for line in listing.splitlines():
    if line.startswith("@"):
        cur = line.strip(); groups[cur] = []
    elif cur and line.strip() and not line.strip().startswith("#"):
        groups[cur].append(line.strip())
def expand(items, seen):
    out = set()
    for it in items:
        if it.startswith("@"):
            if it not in seen:
                seen.add(it); out |= expand(groups[it], seen)
        else:
            out.add(it)
    return out
allow, deny = set(), set()
for line in open(unit_file):
    if line.startswith("SystemCallFilter="):
        value = line.split("=", 1)[1].strip()
        if value.startswith("~"):
            deny |= expand(value[1:].split(), set())
        else:
            allow |= expand(value.split(), set())
allowed = (allow | expand(["@default"], set())) - deny
lib = ctypes.CDLL("libseccomp.so.2")
lib.seccomp_init.restype = ctypes.c_void_p
lib.seccomp_init.argtypes = [ctypes.c_uint32]
lib.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint]
lib.seccomp_load.argtypes = [ctypes.c_void_p]
lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
ctx = lib.seccomp_init(0x00050000 | 1)  # SCMP_ACT_ERRNO(EPERM)
for name in sorted(allowed):
    nr = lib.seccomp_syscall_resolve_name(name.encode())
    if nr >= 0:
        assert lib.seccomp_rule_add(ctx, 0x7FFF0000, nr, 0) == 0, name  # SCMP_ACT_ALLOW
libc = ctypes.CDLL(None)
assert libc.prctl(38, 1, 0, 0, 0) == 0  # PR_SET_NO_NEW_PRIVS
if os.environ.get("MDWE") == "1":
    assert libc.prctl(65, 1, 0, 0, 0) == 0  # PR_SET_MDWE
assert lib.seccomp_load(ctx) == 0
os.execv(argv[0], argv)
"""


def _seccomp_available() -> str | None:
    if not shutil.which("systemd-analyze"):
        return "systemd-analyze not installed"
    try:
        ctypes.CDLL("libseccomp.so.2")
    except OSError:
        return "libseccomp.so.2 not installed"
    return None


def test_runs_under_the_units_syscall_filter(
    tmp_path: Path, notify: NotifyListener, asset: Callable[[str], Path]
) -> None:
    """SystemCallFilter=@system-service ~@privileged (+ NoNewPrivileges, W^X where the kernel has it) does not
    break ONNX Runtime, OpenCV's decoder, pyzmq or the notify socket; and it does refuse a privileged call."""
    reason = _seccomp_available()
    if reason:
        pytest.skip(reason)
    unit = REPO / "systemd" / "edge-agent.service"
    env = daemon_env()
    env.update(NOTIFY_SOCKET=notify.name, PYTHONPATH=str(REPO), MDWE="1" if _mdwe_supported() else "0")

    control = subprocess.run([sys.executable, "-c", _SECCOMP_EXEC, str(unit), sys.executable, "-c",
                              "import os\ntry:\n    os.chroot('/')\nexcept PermissionError:\n    print('refused')"],
                             env=env, capture_output=True, text=True, timeout=60, check=False)
    assert control.stdout.strip() == "refused", control.stdout + control.stderr  # the filter is in force

    video = asset("single_face.mp4")
    cfg = tmp_path / "config.toml"
    _write_config(cfg, f"ipc://{tmp_path}/pub.sock", 0.5)
    proc = subprocess.run([sys.executable, "-c", _SECCOMP_EXEC, str(unit), sys.executable, "-m", "edge_agent", "run",
                           "--config", str(cfg), "--source", str(video), "--once"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=READY_TIMEOUT_S, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"source ended after [1-9][0-9]* frames", proc.stderr), proc.stderr
    assert not re.search(r"WARNING|ERROR", proc.stderr), proc.stderr
    assert any(m.startswith("READY=1") for _, m in notify.snapshot())
