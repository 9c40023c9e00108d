"""Soak and subscriber benchmarks against the real daemon (``python -m edge_agent run`` in a subprocess).

::

    python benchmarks/soak.py --frames 20000            # long run: RSS over time, threads and fds at start/end
    python benchmarks/soak.py --subscribers             # none / slow / many subscribers: output rate and latency
    python benchmarks/soak.py --frames 1500 --out x.json  # what tests/integration/test_soak_short.py runs

The daemon plays a sample video in a loop at ``pace=fast`` (every frame processed, as fast as the CPU allows) and
publishes on an ipc:// endpoint. A status-only SUB socket (ZeroMQ filters topics at the publisher, so it gets no
emotion messages) follows ``frames_published``; /proc/<pid> gives RSS, thread and fd counts once a second.
Results are written as JSON to benchmarks/results/soak_<kind>_<timestamp>.json unless --out is given.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import zmq

from edge_agent.bench.targets import RSS_MAX_MB, memory_target

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = REPO_ROOT / "benchmarks" / "results"
DEFAULT_SOURCE = "sample:single_face.mp4"  # 72 frames, 640x360, one face: loops (reopens the file) often
CAMERA_ID = "soak"


@dataclass
class Sample:
    t_s: float  # since the daemon started
    frames_published: int
    rss_mb: float
    threads: int
    fds: int
    rss_anon_mb: float = 0.0  # private heap/arenas/activations (RssAnon)
    rss_file_mb: float = 0.0  # mapped files, mostly shared-library code: cv2, onnxruntime, FFmpeg (RssFile)


@dataclass
class RunResult:
    source: str
    frames_target: int
    frames_published: int
    wall_s: float
    exit_code: int
    samples: list[Sample] = field(default_factory=list)
    final_status: dict[str, Any] = field(default_factory=dict)


def rss_split(pid: int) -> tuple[float, float]:
    """(RssAnon, RssFile) of a live process in MB, from /proc/<pid>/status."""
    vals = {"RssAnon:": 0, "RssFile:": 0}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key = line.split(":", 1)[0] + ":"
        if key in vals:
            vals[key] = int(line.split()[1])
    return round(vals["RssAnon:"] / 1024.0, 2), round(vals["RssFile:"] / 1024.0, 2)


def proc_stats(pid: int) -> tuple[float, int, int]:
    """(RSS in MB, thread count, open fd count) of a live process, from /proc."""
    rss_kb = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss_kb = int(line.split()[1])
            break
    threads = len(os.listdir(f"/proc/{pid}/task"))
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return rss_kb / 1024.0, threads, fds


class StatusFollower:
    """A SUB socket for ``status.v1.<camera>`` only; keeps the newest status message."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str) -> None:
        self.sock = ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RECONNECT_IVL, 10)
        self.sock.setsockopt(zmq.SUBSCRIBE, f"status.v1.{CAMERA_ID}".encode())
        self.sock.connect(endpoint)
        self.latest: dict[str, Any] = {}

    def poll(self, timeout_ms: int) -> None:
        while self.sock.poll(timeout_ms):
            _, payload = self.sock.recv_multipart()
            self.latest = json.loads(payload)
            timeout_ms = 0

    @property
    def published(self) -> int:
        return int(self.latest.get("frames_published", 0))

    def close(self) -> None:
        self.sock.close()


class Readers:
    """``n`` SUB sockets subscribed to everything, read as fast as possible by one thread (a busy consumer)."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str, n: int) -> None:
        self.socks = []
        self.poller = zmq.Poller()
        for _ in range(n):
            s = ctx.socket(zmq.SUB)
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.SUBSCRIBE, b"")
            s.connect(endpoint)
            self.poller.register(s, zmq.POLLIN)
            self.socks.append(s)
        self.received = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for s, _ in self.poller.poll(50):
                while True:
                    try:
                        s.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self.received += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for s in self.socks:
            s.close()


def daemon_env(endpoint: str, source: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_AGENT_") or k == "EDGE_AGENT_CACHE"}
    env.update({
        "EDGE_AGENT_SOURCE__URI": source,
        "EDGE_AGENT_SOURCE__LOOP": "true",
        "EDGE_AGENT_SOURCE__PACE": "fast",
        "EDGE_AGENT_BACKEND__KIND": "onnx",
        "EDGE_AGENT_PUBLISHER__ENDPOINT": endpoint,
        "EDGE_AGENT_PUBLISHER__CAMERA_ID": CAMERA_ID,
        "EDGE_AGENT_PUBLISHER__STATUS_INTERVAL_S": "0.5",
        "EDGE_AGENT_LOGGING__LEVEL": "WARNING",
    })
    env.update(extra or {})
    return env


def run_daemon(frames: int, *, source: str = DEFAULT_SOURCE, idle_subscribers: int = 0, readers: int = 0,
               sample_every_s: float = 1.0, timeout_s: float = 7200.0, log: Path | None = None,
               settings: dict[str, str] | None = None) -> RunResult:
    """Run the daemon until it has published ``frames`` emotion messages, sampling /proc once a second."""
    with tempfile.TemporaryDirectory(prefix="edge-soak-") as tmp:
        endpoint = f"ipc://{tmp}/soak.sock"
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        follower = StatusFollower(ctx, endpoint)
        idle = []
        for _ in range(idle_subscribers):  # subscribed to everything, never read: the slowest possible consumer
            s = ctx.socket(zmq.SUB)
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.RCVHWM, 1)
            s.setsockopt(zmq.SUBSCRIBE, b"")
            s.connect(endpoint)
            idle.append(s)
        busy = Readers(ctx, endpoint, readers) if readers else None
        err = open(log, "w") if log is not None else subprocess.DEVNULL  # noqa: SIM115 (closed below)
        t0 = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "edge_agent", "run"],
                                env=daemon_env(endpoint, source, settings),
                                cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=err)
        result = RunResult(source=source, frames_target=frames, frames_published=0, wall_s=0.0, exit_code=-1)
        try:
            next_sample = time.monotonic()
            while follower.published < frames:
                if proc.poll() is not None:
                    raise RuntimeError(f"the daemon exited with {proc.returncode} after "
                                       f"{follower.published} frames (see {log or 'its log'})")
                if time.monotonic() - t0 > timeout_s:
                    raise RuntimeError(f"timeout: {follower.published} of {frames} frames in {timeout_s:g} s")
                follower.poll(100)
                now = time.monotonic()
                if now >= next_sample:
                    rss, threads, fds = proc_stats(proc.pid)
                    result.samples.append(Sample(round(now - t0, 2), follower.published, round(rss, 2), threads,
                                                 fds, *rss_split(proc.pid)))
                    next_sample = now + sample_every_s
            rss, threads, fds = proc_stats(proc.pid)
            result.samples.append(Sample(round(time.monotonic() - t0, 2), follower.published, round(rss, 2),
                                         threads, fds, *rss_split(proc.pid)))
            result.final_status = follower.latest
            result.frames_published = follower.published
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            result.exit_code = proc.returncode
            result.wall_s = round(time.monotonic() - t0, 2)
            if busy is not None:
                busy.close()
            for s in idle:
                s.close()
            follower.close()
            ctx.term()
            if log is not None and not isinstance(err, int):
                err.close()
        return result


def summarize_soak(r: RunResult, warmup_frames: int) -> dict[str, Any]:
    """Start = the first sample at or after ``warmup_frames`` published; end = the last sample."""
    after = [s for s in r.samples if s.frames_published >= warmup_frames]
    if len(after) < 2:
        raise RuntimeError(f"too few samples after warm-up ({len(after)}); run more frames than {warmup_frames}")
    start, end = after[0], after[-1]
    return {
        "warmup_frames": warmup_frames,
        "start": asdict(start),
        "end": asdict(end),
        "rss_growth_mb": round(end.rss_mb - start.rss_mb, 2),
        "rss_max_after_warmup_mb": max(s.rss_mb for s in after),
        "threads_start_end": [start.threads, end.threads],
        "fds_start_end": [start.fds, end.fds],
        "threads_max": max(s.threads for s in after),
        "fds_max": max(s.fds for s in after),
        "fps_mean_after_warmup": round((end.frames_published - start.frames_published) / max(1e-9, end.t_s - start.t_s),
                                       2),
    }


def _status_summary(st: dict[str, Any]) -> dict[str, Any]:
    lat = st.get("latency_ms", {})
    uptime = float(st.get("uptime_s") or 0.0)
    return {
        "fps_mean": round(int(st.get("frames_published", 0)) / uptime, 2) if uptime > 0 else None,  # since start()
        "fps_out": st.get("fps_out"),
        "frames_published": st.get("frames_published"),
        "drops": st.get("drops"),
        "publish_drops": st.get("publish_drops"),
        "source": st.get("source"),
        "latency_ms": {k: lat[k] for k in ("end_to_end", "publish", "detector") if k in lat},
        "models": st.get("models"),  # the model ids the daemon loaded (both models: detector + classifier)
    }


def machine() -> dict[str, Any]:
    return {
        "cpu": platform.processor() or platform.machine(),
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "loadavg_at_start": os.getloadavg(),
    }


def _write(kind: str, data: dict[str, Any], out: Path | None) -> Path:
    if out is None:
        RESULTS.mkdir(parents=True, exist_ok=True)
        out = RESULTS / f"soak_{kind}_{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(data, indent=2) + "\n")
    return out


def setting_env(pairs: list[str]) -> dict[str, str]:
    """``["pipeline.detect_workers=2"]`` -> ``{"EDGE_AGENT_PIPELINE__DETECT_WORKERS": "2"}``."""
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise SystemExit(f"--set {pair!r}: expected SECTION.KEY=VALUE")
        env["EDGE_AGENT_" + key.strip().upper().replace(".", "__")] = value
    return env


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=20000, help="soak: stop after this many published frames")
    p.add_argument("--warmup", type=int, default=None, help="soak: frames before the start sample "
                                                            "(default: 10%% of --frames, at least 200)")
    p.add_argument("--subscribers", action="store_true", help="compare none / slow / many subscribers instead")
    p.add_argument("--sub-frames", type=int, default=1200, help="--subscribers: frames per scenario")
    p.add_argument("--many", type=int, default=10, help="--subscribers: number of reading subscribers")
    p.add_argument("--source", default=DEFAULT_SOURCE)
    p.add_argument("--out", type=Path, help="write the JSON here instead of benchmarks/results/")
    p.add_argument("--log", type=Path, help="write the daemon's stderr here")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="a daemon setting, e.g. pipeline.detect_workers=2 (repeatable)")
    args = p.parse_args(argv)
    settings = setting_env(args.set)
    info = machine()
    if args.subscribers:
        scenarios = {"none": (0, 0), "slow": (1, 0), f"many{args.many}": (0, args.many),
                     f"slow+many{args.many}": (1, args.many)}
        out: dict[str, Any] = {"kind": "subscribers", "machine": info, "source": args.source,
                               "frames_per_scenario": args.sub_frames, "scenarios": {}}
        for name, (idle, readers) in scenarios.items():
            r = run_daemon(args.sub_frames, source=args.source, idle_subscribers=idle, readers=readers,
                           log=args.log)
            summary = _status_summary(r.final_status)
            summary.update({"idle_subscribers": idle, "reading_subscribers": readers, "exit_code": r.exit_code,
                            "wall_s": r.wall_s})
            out["scenarios"][name] = summary
            lat = summary["latency_ms"].get("end_to_end", {})
            print(f"{name:14s} fps_mean {summary['fps_mean']} fps_out {summary['fps_out']}  "
                  f"e2e p50 {lat.get('p50')} p95 {lat.get('p95')} ms  "
                  f"publish_drops {summary['publish_drops']}  exit {r.exit_code}", flush=True)
        out["machine"]["loadavg_at_end"] = os.getloadavg()
        print(_write("subscribers", out, args.out))
        return 0
    warmup = args.warmup if args.warmup is not None else max(200, args.frames // 10)
    r = run_daemon(args.frames, source=args.source, log=args.log, settings=settings)
    data: dict[str, Any] = {"kind": "soak", "machine": info, "settings": args.set, **summarize_soak(r, warmup),
                            "run": {k: v for k, v in asdict(r).items() if k not in ("samples", "final_status")},
                            "final_status": _status_summary(r.final_status),
                            "samples": [asdict(s) for s in r.samples]}
    data["machine"]["loadavg_at_end"] = os.getloadavg()
    data["memory_target_mb"] = RSS_MAX_MB  # issue 8 target 5: RSS with both models loaded
    data["memory_target_met"] = memory_target(data["rss_max_after_warmup_mb"])["met"]
    path = _write("soak", data, args.out)
    print(f"{r.frames_published} frames in {r.wall_s:.0f} s, exit {r.exit_code}; RSS {data['start']['rss_mb']} -> "
          f"{data['end']['rss_mb']} MB (growth {data['rss_growth_mb']} MB), threads {data['threads_start_end']}, "
          f"fds {data['fds_start_end']}; max RSS {data['rss_max_after_warmup_mb']} MB (target <= {RSS_MAX_MB:g}: "
          f"{'met' if data['memory_target_met'] else 'NOT met'}), models {data['final_status'].get('models')}; {path}",
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
