"""Compile the detector (raw-heads deploy variant) and the classifier ONNX artifacts into Hailo HEFs.

    python -m build.compile_hef --detector models/detector/acwface-deploy \
        --classifier models/classifier/mnv3s-facex7 --arch hailo8 --calib build/calib --out models/hailo8/

Per model: ONNX -> ``ClientRunner(hw_arch=...)`` -> ``translate_onnx_model(onnx, name, start_node_names,
end_node_names, net_input_shapes)`` (end nodes: the raw head convs / the classifier's last layer) -> model script
(normalisation folded in, colour conversion from the camera's BGR, optimisation flavour) -> ``optimize(calib)``
with the real frames / face crops from ``build/calibration.py`` -> ``compile()`` -> ``model.hef`` + manifest
(HEF output names mapped back to the ONNX outputs, per-frame shapes, quant info, target arch, DFC version).

Needs the Hailo Dataflow Compiler (``hailo_sdk_client``, x86-64 Linux, see docs/hailo.md); without it this
stops with exit code 2 and says so. Everything that does not need the DFC (model script text, end-node
discovery, manifest writing) is plain Python and tested in tests/build/test_compile_hef.py.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from build.calibration import CLASSIFIER_FILE, DETECTOR_FILE
from edge_agent.backends.hailo_manifest import CompileFacts, HefOutput, hef_network_name, write_hef_artifact
from edge_agent.manifest import ModelArtifact, load_artifact

log = logging.getLogger(__name__)

EXIT_NO_DFC = 2
MIN_CALIB = 1024
CAMERA_ORDER = "BGR"  # what OpenCV capture delivers, hence what the HEF input takes
LAYOUT_ONLY_OPS = {"Transpose", "Reshape", "Identity"}

NO_DFC_MESSAGE = (
    "hailo_sdk_client (the Hailo Dataflow Compiler) is not importable. The DFC runs on an x86-64 Linux host "
    "(Ubuntu 22.04/24.04, Python 3.10), not on the Raspberry Pi: install the hailo_dataflow_compiler wheel from "
    "the Hailo Developer Zone into that host's venv, or use the Hailo AI Software Suite docker image, then rerun "
    "this command there. See docs/hailo.md."
)


# ------------------------------------------------------------------------------------------ pure parts


def dfc_normalization(mean: Sequence[float], std: Sequence[float], scale: float) -> tuple[list[float], list[float]]:
    """Manifest normalisation ``(x * scale - mean) / std`` as the DFC's ``normalization(mean, std)`` on raw
    0..255 pixels, ``(x - mean') / std'``: mean' = mean / scale, std' = std / scale."""
    return [round(m / scale, 6) for m in mean], [round(s / scale, 6) for s in std]


def model_script(art: ModelArtifact, *, camera_order: str = CAMERA_ORDER, gpu: bool = False,
                 calibset_size: int = MIN_CALIB) -> str:
    """The .alls model script for one artifact: normalisation and colour conversion folded into the HEF."""
    pre = art.manifest.preprocess
    mean, std = dfc_normalization(pre.mean, pre.std, pre.scale)
    lines = [f"normalization1 = normalization([{', '.join(map(str, mean))}], [{', '.join(map(str, std))}])"]
    if pre.color_order != camera_order:
        # The camera delivers BGR; the network was trained on RGB: swap on the chip, not on the host.
        conv = "bgr_to_rgb" if camera_order == "BGR" else "rgb_to_bgr"
        lines.append(f"input_conversion = input_conversion({conv})")
    lines.append(f"model_optimization_flavor(optimization_level={2 if gpu else 0}, compression_level=0)")
    lines.append(f"model_optimization_config(calibration, batch_size=8, calibset_size={calibset_size})")
    return "\n".join(lines) + "\n"


def end_nodes(model: onnx.ModelProto, outputs: Sequence[str]) -> dict[str, str]:
    """For each ONNX output, the compute node to end the Hailo graph at (walking back over layout-only ops:
    the chip emits NHWC itself). Returns {output name: node name}."""
    producer = {o: n for n in model.graph.node for o in n.output}
    out: dict[str, str] = {}
    for name in outputs:
        node = producer.get(name)
        while node is not None and node.op_type in LAYOUT_ONLY_OPS:
            node = producer.get(node.input[0])
        if node is None:
            raise ValueError(f"ONNX output {name!r} has no producing compute node")
        out[name] = node.name or node.output[0]
    return out


def start_node(model: onnx.ModelProto) -> tuple[str, list[int]]:
    """The graph input name and its NCHW shape (batch 1) for ``net_input_shapes``."""
    inits = {i.name for i in model.graph.initializer}
    (inp,) = [i for i in model.graph.input if i.name not in inits]
    dims = [d.dim_value if d.dim_value > 0 else -1 for d in inp.type.tensor_type.shape.dim]
    return inp.name, dims


def net_input_shape(art: ModelArtifact, dims: list[int]) -> list[int]:
    """Concrete [1, 3, H, W]: dynamic dims from the manifest's default input size."""
    w, h = art.manifest.preprocess.input_size
    return [1, 3, dims[2] if dims[2] > 0 else int(h), dims[3] if dims[3] > 0 else int(w)]


VStream = tuple[str, tuple[int, ...], float, float]  # name, per-frame shape, qp_scale, qp_zp


def map_hef_outputs(hn: Mapping[str, Any], net: str, ends: Mapping[str, str], vstreams: Sequence[VStream]
                    ) -> list[HefOutput]:
    """Match the compiled HEF's output vstreams back to the ONNX outputs.

    ``hn``: ``runner.get_hn_dict()`` (layers carry ``original_names`` = ONNX node names); ``ends``: {ONNX
    output: end node}; ``vstreams``: (name, per-frame shape, qp_scale, qp_zp) from the HEF's output vstream
    infos. Output vstreams are named ``<net>/<layer>`` after the layer feeding each ``output_layer``.
    """
    layers: Mapping[str, Any] = hn["layers"]
    by_node: dict[str, str] = {}
    for layer in layers.values():
        if layer.get("type") != "output_layer":
            continue
        (src,) = layer["input"]
        for orig in layers[src].get("original_names", []):
            by_node[orig] = src if "/" in src else f"{net}/{src}"
    infos = {v[0]: v for v in vstreams}
    result: list[HefOutput] = []
    for onnx_name, node in ends.items():
        vname = by_node.get(node)
        if vname is None or vname not in infos:
            raise ValueError(f"no HEF output for ONNX output {onnx_name!r} (end node {node!r}); "
                             f"HEF outputs: {sorted(infos)}")
        _, shape, scale, zp = infos[vname]
        result.append(HefOutput(vname, onnx_name, tuple(shape), float(scale), float(zp)))
    return result


def load_calib(calib_dir: Path, task: str, hw: tuple[int, int]) -> np.ndarray:
    path = calib_dir / (DETECTOR_FILE if task == "detector" else CLASSIFIER_FILE)
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing: make it with `python -m build.calibration ... --out {calib_dir}`")
    data = np.load(path)
    if data.dtype != np.uint8 or data.ndim != 4 or tuple(data.shape[1:3]) != hw or data.shape[3] != 3:
        raise ValueError(f"{path}: expected uint8 (N, {hw[0]}, {hw[1]}, 3), got {data.dtype} {data.shape}")
    if len(data) < MIN_CALIB:
        log.warning("%s has %d samples; the recipe calibrates on at least %d", path, len(data), MIN_CALIB)
    return data


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def gpu_available() -> bool:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return False
    return subprocess.run([exe, "-L"], capture_output=True, check=False).returncode == 0


# --------------------------------------------------------------------------------------- DFC-driven part


def compile_one(art: ModelArtifact, arch: str, calib_dir: Path, out_dir: Path, *, recipe: str, gpu: bool) -> Path:
    """ONNX artifact -> HEF artifact at ``out_dir`` with the DFC. Not exercised in CI (no DFC there)."""
    import hailo_sdk_client  # type: ignore[import-not-found]
    from hailo_platform import HEF  # the DFC host has HailoRT's Python package too (AI SW Suite)
    from hailo_sdk_client import ClientRunner  # type: ignore[import-not-found]

    m = art.manifest
    net = hef_network_name(m.model_id)
    model = onnx.load(str(art.path))
    in_name, dims = start_node(model)
    shape = net_input_shape(art, dims)
    ends = end_nodes(model, [t.name for t in m.outputs])
    calib = load_calib(calib_dir, m.task, (shape[2], shape[3]))
    runner = ClientRunner(hw_arch=arch)
    runner.translate_onnx_model(str(art.path), net, start_node_names=[in_name],
                                end_node_names=list(ends.values()), net_input_shapes={in_name: shape})
    script = model_script(art, gpu=gpu, calibset_size=len(calib))
    log.info("%s model script:\n%s", m.model_id, script)
    runner.load_model_script(script)
    runner.optimize(calib.astype(np.float32))  # raw 0..255 pixels: the script's normalisation comes first
    hef_bytes = runner.compile()
    out_dir.mkdir(parents=True, exist_ok=True)
    runner.save_har(str(out_dir / f"{net}.har"))
    tmp = out_dir / "model.hef"
    tmp.write_bytes(hef_bytes)
    hef = HEF(str(tmp))
    (vin,) = hef.get_input_vstream_infos()
    vouts = [(v.name, tuple(v.shape), v.quant_info.qp_scale, v.quant_info.qp_zp)
             for v in hef.get_output_vstream_infos()]
    facts = CompileFacts(
        arch=arch,  # type: ignore[arg-type]
        dfc_version=str(getattr(hailo_sdk_client, "__version__", "unknown")),
        input_name=vin.name,
        input_hw=(int(vin.shape[0]), int(vin.shape[1])),
        outputs=tuple(map_hef_outputs(runner.get_hn_dict(), net, ends, vouts)),
        color_order=CAMERA_ORDER,
        recipe=recipe,
        created=dt.date.today().isoformat(),
        git_commit=git_commit(),
    )
    write_hef_artifact(art, facts, hef_bytes, out_dir)
    load_artifact(out_dir)
    return out_dir


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m build.compile_hef", description=__doc__.split("\n\n")[0])
    p.add_argument("--detector", type=Path, help="raw-heads deploy ONNX artifact (e.g. models/detector/acwface-deploy)")
    p.add_argument("--classifier", type=Path, help="classifier ONNX artifact (e.g. models/classifier/mnv3s-facex7)")
    p.add_argument("--arch", choices=["hailo8", "hailo8l", "hailo8r"], default="hailo8")
    p.add_argument("--calib", type=Path, required=True, help="directory written by `python -m build.calibration`")
    p.add_argument("--out", type=Path, required=True,
                   help="output root: writes OUT/detector and OUT/classifier (point detector.hailo_model and "
                        "classifier.hailo_model at them)")
    p.add_argument("--gpu", choices=["auto", "yes", "no"], default="auto",
                   help="optimisation level 2 needs a GPU; without one level 0 is used (default: auto-detect)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not (args.detector or args.classifier):
        p.error("give --detector and/or --classifier")
    jobs = [(task, load_artifact(d)) for task, d in (("detector", args.detector), ("classifier", args.classifier)) if d]
    for task, art in jobs:
        if art.manifest.task != task or art.manifest.format != "onnx":
            p.error(f"--{task} {art.directory}: expected an ONNX {task} artifact, got {art.manifest.format} "
                    f"{art.manifest.task}")
        if task == "detector" and (art.manifest.detector_outputs is None
                                   or art.manifest.detector_outputs.kind != "raw_heads"):
            p.error(f"--detector {art.directory}: needs the raw-heads deploy variant (per-stride conv outputs)")
    try:
        import hailo_sdk_client  # noqa: F401
    except ImportError:
        print(f"error: {NO_DFC_MESSAGE}", file=sys.stderr)
        return EXIT_NO_DFC
    gpu = gpu_available() if args.gpu == "auto" else args.gpu == "yes"
    recipe = "python -m build.compile_hef " + " ".join(sys.argv[1:] if argv is None else argv)
    for task, art in jobs:
        out = compile_one(art, args.arch, args.calib, args.out / task, recipe=recipe, gpu=gpu)
        log.info("%s -> %s", art.manifest.model_id, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
