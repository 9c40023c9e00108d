"""``edge-bench hailo-sim``: the Pi 5 + Hailo latency model, and the real pipeline on a simulated Hailo device.

1. Measure the Hailo path's host work per frame here (:mod:`edge_agent.bench.hailo_host`), scale it to the
   Pi 5 (``--host-scale``), take the device costs from the published chip figures and the PCIe link
   (:mod:`edge_agent.bench.hailo_model`), and project fps / latency / device busy share for 0, 1 and 4 faces
   under each pipeline layout.
2. Simulate: compile both models into simulated HEFs, play the source once to fill the simulator's output cache,
   then play it again through the real :class:`edge_agent.pipeline.Pipeline` on a simulated chip whose time per
   inference is the projected device time divided by ``--host-scale`` (time dilation: the host here is that
   much faster than the Pi's, so the host:device ratio is the Pi's). Report the chip's busy share (independent
   of the dilation) and the fps and latency converted back to the Pi's time scale.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_agent.bench import hailo_model as hm
from edge_agent.bench.machine import machine_info
from edge_agent.bench.report import now_iso, results_dir, write_result
from edge_agent.paths import default_models_dir

if TYPE_CHECKING:
    from edge_agent.bench.hailo_sim.run import SimRun

DEFAULT_SOURCE = "sample:WolfgangLanger_Pexels.mp4"
FACE_COUNTS = (0, 1, 4)


def add_parser(sub: Any) -> None:
    p = sub.add_parser("hailo-sim", help="Pi 5 + Hailo latency model and the pipeline on a simulated Hailo device")
    p.add_argument("--source", dest="sim_source", default=DEFAULT_SOURCE,
                   help=f"video played through the pipeline (default {DEFAULT_SOURCE})")
    p.add_argument("--arch", choices=("hailo8", "hailo8l"), default="hailo8")
    p.add_argument("--pcie", choices=tuple(hm.PCIE_LINKS), default="gen2x1",
                   help="the Pi 5's PCIe link: gen2x1 (default) or gen3x1 (dtparam=pciex1_gen=3)")
    p.add_argument("--host-scale", type=float, default=hm.PI5_HOST_SCALE,
                   help=f"Pi 5 host time per unit of host time here (default {hm.PI5_HOST_SCALE})")
    p.add_argument("--switch-ms", type=float, default=0.0,
                   help="scheduler switch cost between the two networks, ms per switch (default 0: not modelled)")
    p.add_argument("--detector", dest="sim_detector", type=Path, default=None,
                   help="raw-heads detector ONNX artifact (default models/detector/acwface-deploy)")
    p.add_argument("--classifier", dest="sim_classifier", type=Path, default=None,
                   help="classifier ONNX artifact (default models/classifier/mnv3s-facex7)")
    p.add_argument("--host-frames", type=int, default=32, help="frames for the host-work measurement")
    p.add_argument("--no-sim", action="store_true", help="only the model (no simulated pipeline run)")
    p.add_argument("--detect-workers", type=int, default=1, choices=(1, 2, 3, 4),
                   help="pipeline.detect_workers of the simulated run (2: two detections in flight)")
    p.add_argument("--out-dir", dest="sim_out", type=Path, default=None,
                   help="result folder (default benchmarks/results)")
    p.add_argument("--note", dest="sim_note", default="", help="free text stored in the result file")


SOURCES = ("file", "camera")  # file: the video's decode in the capture thread; camera: raw frames, no decode


def _projections(host: hm.HostCosts, dev: hm.DeviceCosts) -> list[dict[str, Any]]:
    rows = []
    for source in SOURCES:
        h = host if source == "file" else dataclasses.replace(host, capture=0.0)
        for layout, faces in ((lay, f) for lay in hm.LAYOUTS for f in FACE_COUNTS):
            p = hm.project(layout, h, dev, faces)
            rows.append({"source": source, "layout": layout, "faces": faces, "fps": round(p.fps, 1),
                         "latency_ms": round(p.latency_ms, 2), "device_busy_pct": round(100 * p.device_busy, 1),
                         "bottleneck": p.bottleneck})
    return rows


def _round(d: dict[str, float], nd: int = 3) -> dict[str, float]:
    return {k: round(v, nd) for k, v in d.items()}


def run_hailo_sim(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    from edge_agent.bench.hailo_host import measure_host

    models = default_models_dir()
    det_dir = args.sim_detector or models / "detector" / "acwface-deploy"
    cls_dir = args.sim_classifier or models / "classifier" / "mnv3s-facex7"
    if args.host_scale <= 0:
        raise ValueError(f"--host-scale must be > 0, got {args.host_scale}")
    host_here, host_facts = measure_host(det_dir, cls_dir, args.sim_source, frames=args.host_frames)
    host_pi = host_here.scaled(args.host_scale)
    link = hm.PCIE_LINKS[args.pcie]
    dev = hm.device_costs(args.arch, link, switch_ms=args.switch_ms)
    projections = _projections(host_pi, dev)
    data: dict[str, Any] = {
        "kind": "hailo-sim",
        "created": now_iso(),
        "machine": machine_info(),
        "note": args.sim_note,
        "assumptions": {
            "arch": args.arch, "pcie": link.name, "pcie_effective_MBps": round(link.bytes_per_s / 1e6, 1),
            "host_scale": args.host_scale, "host_scale_band": list(hm.PI5_HOST_SCALE_BAND),
            "detector_reference": dataclasses.asdict(hm.PUBLISHED[("scrfd_500m", args.arch)]),
            "classifier_reference": dataclasses.asdict(hm.PUBLISHED[("mobilenet_v3_large_minimalistic", args.arch)]),
            "detector_gmac": hm.DETECTOR_GMAC_640X384, "classifier_gmac": hm.CLASSIFIER_GMAC_160,
            "detector_bytes": list(hm.detector_bytes()), "classifier_bytes": list(hm.classifier_bytes()),
        },
        "host_ms_here": _round(dataclasses.asdict(host_here)),
        "host_ms_pi5": _round(dataclasses.asdict(host_pi)),
        "host_measurement": host_facts,
        "device_ms": _round(dataclasses.asdict(dev)),
        "projection": projections,
        "detect_workers": args.detect_workers,
    }
    lines = [f"Hailo on paper: {args.arch} over {link.name}, Pi 5 host = {args.host_scale}x this machine "
             f"(measured on {args.sim_source})",
             "host ms here -> Pi 5: " + ", ".join(f"{k} {v:.3f}->{getattr(host_pi, k):.3f}"
                                                    for k, v in dataclasses.asdict(host_here).items()),
             f"device ms: detector chip {dev.detector_chip:.3f} + PCIe {dev.detector_transfer:.3f}; classifier "
             f"chip {dev.classifier_chip:.3f} + PCIe {dev.classifier_transfer:.3f} per face",
             f"{'source':<8}{'layout':<12}{'faces':>6}{'fps':>9}{'latency ms':>12}{'busy %':>9}  bottleneck"]
    lines += [f"{r['source']:<8}{r['layout']:<12}{r['faces']:>6}{r['fps']:>9.1f}{r['latency_ms']:>12.2f}"
              f"{r['device_busy_pct']:>9.1f}  {r['bottleneck']}" for r in projections]
    if not args.no_sim:
        data["simulation"] = _simulate(args, det_dir, cls_dir, dev)
        for capture, s in data["simulation"].items():
            lines.append(
                f"simulated device, real Pipeline (detect_workers={args.detect_workers}), capture={capture}: "
                f"chip busy {s['chip_busy_pct']:.1f} %, "
                f"{s['frames_published']} frames ({s['frames_with_faces']} with faces), Pi-time fps "
                f"{s['fps_pi']:.1f}, device idle {s['device_idle_per_frame_pi_ms']:.2f} ms/frame, "
                f"capture->publish p50 {s['latency_pi_ms']['p50']:.1f} p99 "
                f"{s['latency_pi_ms']['p99']:.1f} ms (Pi time, queueing included); simulator overruns "
                f"{s['overruns']} ({s['overrun_pct_of_window']:.1f} % of the window), cache misses "
                f"{s['cache']['misses']}")
    workers = f"-w{args.detect_workers}" if args.detect_workers > 1 else ""
    config = f"hailo-sim-{args.arch}-{args.pcie}-x{args.host_scale:g}{workers}"
    out = write_result(data, args.sim_out or results_dir(), data["machine"]["cpu_model"],
                       data["machine"]["versions"].get("onnxruntime", "na"), config)
    lines.append(f"wrote {out}")
    return data, "\n".join(lines)


def _simulate(args: argparse.Namespace, det_dir: Path, cls_dir: Path, dev: hm.DeviceCosts) -> dict[str, Any]:
    from edge_agent.bench.hailo_sim.compile import sim_compile
    from edge_agent.bench.hailo_sim.run import run_pipeline

    root = Path(tempfile.mkdtemp(prefix="hailo-sim-hef-"))
    det_hef = sim_compile(det_dir, root / "detector", arch=args.arch)
    cls_hef = sim_compile(cls_dir, root / "classifier", arch=args.arch)
    arch = args.arch.upper()
    run_pipeline(det_hef, cls_hef, args.sim_source, {"detector": 0.0, "classifier": 0.0}, arch=arch)  # prime
    dilation = args.host_scale
    seconds = {"detector": dev.detector() / 1000.0 / dilation,
               "classifier": (dev.classifier_chip + dev.classifier_transfer) / 1000.0 / dilation}
    results: dict[str, Any] = {}
    for capture in ("file", "memory"):
        run = run_pipeline(det_hef, cls_hef, args.sim_source, seconds, arch=arch, capture=capture,
                           settings_extra={"pipeline": {"detect_workers": args.detect_workers}})
        results[capture] = _sim_json(run, seconds, dilation)
    return results


def _checkout() -> str:
    """The git commit of the code that ran (``+dirty`` with local changes), for telling A/B runs apart."""
    import subprocess

    from edge_agent.paths import repo_root

    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo_root(), capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo_root(),
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "an unknown checkout (no git)"
    return f"commit {head}{'+dirty' if dirty else ''}"


def _sim_json(run: SimRun, seconds: dict[str, float], dilation: float) -> dict[str, Any]:
    out: dict[str, Any] = run.to_json()
    e2e = run.latency_ms.get("end_to_end", {})
    out.update(
        layout_measured=f"edge_agent.pipeline.Pipeline of {_checkout()}",
        chip_ms_simulated={k: round(v * 1000.0, 4) for k, v in seconds.items()},
        time_dilation=dilation,
        fps_pi=round(run.fps / dilation, 2),
        # Device idle time per frame (Pi time): the host work and overhead the layout leaves between device jobs.
        device_idle_per_frame_pi_ms=round(1000.0 * run.seconds * (1.0 - run.chip_busy)
                                          / max(1, run.frames_published) * dilation, 3),
        latency_pi_ms={k: round(v * dilation, 2) for k, v in e2e.items()},
        latency_note="pace=fast keeps the capture queue full, so end_to_end includes capture_queue (frames "
                     "waiting for the inference thread); the model's latency_ms excludes queueing",
    )
    return out
