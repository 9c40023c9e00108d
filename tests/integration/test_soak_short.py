"""A short soak of the real daemon: ~1500 frames of a looping sample video (it reopens the file every 72 frames).

After warm-up, RSS must stay within 20 MB and the thread and open-fd counts must not grow beyond a transient
one or two (a leaked capture handle, socket or thread per loop would add ~20). Runs ``benchmarks/soak.py`` in a
subprocess and reads its JSON.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
FRAMES = 1500
WARMUP = 300
RSS_GROWTH_LIMIT_MB = 20.0


@pytest.mark.slow
def test_short_soak_bounds_rss_threads_and_fds(tmp_path: Path, asset: Callable[[str], Path],
                                               shipped_model: Callable[[str], Path]) -> None:
    asset("single_face.mp4")  # fetched (or skip) before the daemon needs it
    shipped_model("detector/acwface-dcn")
    shipped_model("classifier/mnv3s-facex7")
    out = tmp_path / "soak.json"
    log = tmp_path / "daemon.log"
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "soak.py"), "--frames", str(FRAMES), "--warmup", str(WARMUP),
         "--out", str(out), "--log", str(log)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:] + log.read_text()[-3000:]
    data = json.loads(out.read_text())
    assert data["run"]["exit_code"] == 0  # SIGTERM at the end: a clean stop
    assert data["run"]["frames_published"] >= FRAMES
    assert len(data["samples"]) >= 5
    start, end = data["start"], data["end"]
    assert end["frames_published"] - start["frames_published"] >= FRAMES - WARMUP - 100
    assert data["rss_growth_mb"] < RSS_GROWTH_LIMIT_MB, data["samples"]
    assert data["rss_max_after_warmup_mb"] - start["rss_mb"] < RSS_GROWTH_LIMIT_MB
    # The file reopens ~20 times: a thread leaked per reopen would add ~20. A sample taken while FFmpeg swaps its
    # decoder (native threads of the old and the new one) may show one or two more for that moment.
    assert end["threads"] <= start["threads"] + 1 and data["threads_max"] <= start["threads"] + 2, data["samples"]
    assert end["fds"] <= start["fds"] and data["fds_max"] <= start["fds"] + 2, data["samples"]
    final = data["final_status"]
    assert final["source"]["state"] == "running" and final["drops"] == 0
    assert "Traceback" not in log.read_text()
