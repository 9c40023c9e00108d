"""The machine a benchmark ran on (CPU model, cores, runtime versions) and its measured fp32 GEMM peak.

The GEMM peak is one core's best ``numpy.matmul`` float32 throughput (BLAS pinned to one thread, 256..1024 square
matrices) times the number of cores, measured once per (CPU model, numpy version, core count) and cached in the
edge-agent cache folder.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.assets import cache_dir

log = logging.getLogger(__name__)


def cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return platform.processor() or platform.machine()
    for key in ("model name", "Hardware", "Model"):
        m = re.search(rf"^{key}\s*:\s*(.+)$", text, re.MULTILINE)
        if m:
            return m.group(1).strip()
    return platform.processor() or platform.machine()


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


SIMD_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "neon", "asimd",
              "asimddp", "sve")


def cpu_simd_flags() -> list[str]:
    """The vector-ISA flags /proc/cpuinfo reports that matter for inference speed."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    m = re.search(r"^(flags|Features)\s*:\s*(.+)$", text, re.MULTILINE)
    have = set(m.group(2).split()) if m else set()
    return [f for f in SIMD_FLAGS if f in have]


def runtime_versions() -> dict[str, str]:
    import cv2
    import onnxruntime as ort
    import zmq

    out = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "onnxruntime": ort.__version__,
        "opencv": cv2.__version__,
        "pyzmq": zmq.__version__,
    }
    try:
        import hailo_platform

        out["hailort"] = str(getattr(hailo_platform, "__version__", "unknown"))
    except ImportError:
        pass
    return out


def machine_info() -> dict[str, Any]:
    return {
        "cpu_model": cpu_model(),
        "cores": os.cpu_count() or 1,
        "arch": platform.machine(),
        "simd": cpu_simd_flags(),
        "os": f"{platform.system()} {platform.release()}",
        "load_avg_1m_at_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "versions": runtime_versions(),
    }


_GEMM_SNIPPET = """
import sys, time
import numpy as np
best = 0.0
for n in (256, 512, 1024):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    np.matmul(a, b)
    for _ in range(int(sys.argv[1])):
        t0 = time.perf_counter()
        np.matmul(a, b)
        best = max(best, 2.0 * n ** 3 / (time.perf_counter() - t0) / 1e9)
print(best)
"""

_ONE_THREAD_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def measure_gemm_gflops(repeats: int = 5) -> float:
    """Best fp32 GEMM throughput of ONE core (numpy's BLAS pinned to one thread, 256..1024 square), GFLOP/s.

    Runs in a child process so the BLAS thread count can be fixed before numpy loads. One thread needs only
    one free core, so the figure is far less disturbed by other load than an all-core measurement.
    """
    env = {**os.environ, **_ONE_THREAD_ENV}
    out = subprocess.run([sys.executable, "-c", _GEMM_SNIPPET, str(repeats)], env=env, capture_output=True,
                         text=True, timeout=300, check=True)
    return float(out.stdout.strip())


def _busy() -> float:
    """The 1-minute load average per core (0 when the platform has no load average)."""
    return os.getloadavg()[0] / (os.cpu_count() or 1) if hasattr(os, "getloadavg") else 0.0


def gemm_peak_gflops(refresh: bool = False) -> tuple[float, bool]:
    """(fp32 GEMM peak of this machine in GFLOP/s = one core's best x cores, measured_on_a_busy_machine).

    Measured on first use and cached -- but only when the machine was quiet (1-minute load average below half
    the core count); a value measured under load is returned flagged and measured again next time.
    """
    key = f"{slug(cpu_model())}_{os.cpu_count()}cores_numpy{np.__version__}_percore"
    path = cache_dir() / "bench" / "gemm_peak.json"
    cached: dict[str, float] = {}
    if path.is_file():
        try:
            cached = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            log.warning("ignoring unreadable GEMM peak cache %s", path)
    if not refresh and key in cached:
        return float(cached[key]), False
    busy = _busy() >= 0.5
    value = measure_gemm_gflops() * (os.cpu_count() or 1)
    if busy:
        log.warning("fp32 GEMM peak %.1f GFLOP/s measured while the machine was busy (load %.1f per core): "
                    "not cached, the efficiency figure is an upper bound", value, _busy())
        return value, True
    log.info("measured fp32 GEMM peak: %.1f GFLOP/s (cached in %s)", value, path)
    cached[key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cached, indent=2), encoding="utf-8")
    return value, False
