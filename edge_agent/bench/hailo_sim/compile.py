"""``sim_compile``: an ONNX artifact -> a simulated HEF artifact (manifest written by the real HEF manifest code).

Plays the DFC for the simulator only: the "HEF" is a JSON description (:mod:`.network`) next to a copy of the
ONNX, and the manifest comes from :func:`edge_agent.backends.hailo_manifest.write_hef_artifact`, so the Hailo
backend checks it exactly as it checks a real HEF's.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from edge_agent.backends.hailo_manifest import (
    CompileFacts,
    HefOutput,
    hef_network_name,
    onnx_output_layout,
    write_hef_artifact,
)
from edge_agent.bench.hailo_sim.network import SIM_HEF_VERSION
from edge_agent.manifest import load_artifact


def sim_compile(onnx_dir: Path, out_dir: Path, arch: str = "hailo8") -> Path:
    """Write a simulated HEF artifact for the ONNX artifact at ``onnx_dir`` into ``out_dir``; returns ``out_dir``."""
    import onnxruntime as ort

    art = load_artifact(onnx_dir)
    m = art.manifest
    if m.task not in ("detector", "classifier"):
        raise ValueError(f"{m.model_id}: task {m.task!r} cannot be simulated")
    net = hef_network_name(m.model_id)
    w, h = int(m.preprocess.input_size[0]), int(m.preprocess.input_size[1])
    sess = ort.InferenceSession(str(art.path), providers=["CPUExecutionProvider"])
    in_name = sess.get_inputs()[0].name
    names = [o.name for o in sess.get_outputs()]
    ys = sess.run(names, {in_name: np.zeros((1, 3, h, w), np.float32)})
    outputs, described = [], []
    for i, (name, y) in enumerate(zip(names, ys, strict=True)):
        layout = onnx_output_layout(art, name, y.ndim)
        y0 = y[0]
        shape = tuple(int(d) for d in (y0.transpose(1, 2, 0).shape if layout == "NCHW" else y0.shape))
        hef_name = f"{net}/conv{i + 1}"
        outputs.append(HefOutput(name=hef_name, onnx_name=name, shape=shape, scale=1.0, zero_point=0.0))
        described.append({"name": hef_name, "onnx_name": name, "shape": list(shape), "onnx_layout": layout})
    pre = m.preprocess
    hef = {
        "sim_hef_version": SIM_HEF_VERSION, "task": m.task, "network_name": net, "onnx": "model.onnx",
        "input": {"name": f"{net}/input_layer1", "onnx_name": in_name, "shape": [h, w, 3],
                  "swap_rb": pre.color_order == "RGB", "scale": pre.scale, "mean": list(pre.mean),
                  "std": list(pre.std)},
        "outputs": described,
    }
    facts = CompileFacts(
        arch=arch,  # type: ignore[arg-type]
        dfc_version="simulated",
        input_name=f"{net}/input_layer1",
        input_hw=(h, w),
        outputs=tuple(outputs),
        color_order="BGR",
        recipe="edge_agent.bench.hailo_sim.compile.sim_compile (latency simulator; not a Hailo HEF)",
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(art.path, out_dir / "model.onnx")
    write_hef_artifact(art, facts, json.dumps(hef, indent=1).encode(), out_dir)
    load_artifact(out_dir)
    return out_dir
