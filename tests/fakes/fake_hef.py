"""Test helper: fake HEF artifacts (+ HEF manifests) made from ONNX artifacts, and tiny ONNX artifacts.

``write_fake_hef(onnx_dir, out_dir, ...)`` plays the DFC: it copies the ONNX beside a fake HEF (JSON the fake
chip in ``tests/fakes/hailo_platform`` understands), calibrates each output's 8-bit quantisation on the
given frames, and writes the HEF manifest with the same code the real compile uses
(:func:`edge_agent.backends.hailo_manifest.write_hef_artifact`).

``make_tiny_detector`` / ``make_tiny_classifier`` build small random-weight ONNX artifacts with valid
manifests so the backend tests do not depend on the shipped models.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from edge_agent.assets import sha256_file
from edge_agent.backends.hailo_manifest import (
    CompileFacts,
    HefOutput,
    hef_network_name,
    onnx_output_layout,
    quant_from_range,
    write_hef_artifact,
)
from edge_agent.manifest import MANIFEST_NAME, ModelArtifact, load_artifact

UInt8 = np.ndarray


def _onnx_input(frames_bgr: np.ndarray, art: ModelArtifact) -> np.ndarray:
    """uint8 (N,H,W,3) BGR -> the float NCHW tensor the ONNX artifact expects (its manifest's normalisation)."""
    pre = art.manifest.preprocess
    x = frames_bgr.astype(np.float32)
    if pre.color_order == "RGB":
        x = x[..., ::-1]
    x = (x * pre.scale - np.asarray(pre.mean, np.float32)) / np.asarray(pre.std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def write_fake_hef(
    onnx_dir: Path,
    out_dir: Path,
    calib_frames_bgr: np.ndarray,
    *,
    arch: str = "hailo8",
    color_order: str = "BGR",
) -> Path:
    """Fake-compile the ONNX artifact at ``onnx_dir`` into a HEF artifact at ``out_dir``.

    ``calib_frames_bgr``: uint8 (N, H, W, 3) BGR frames at the network input size, used to pick each output's
    quantisation range (as the DFC's calibration does). Returns ``out_dir``.
    """
    art = load_artifact(onnx_dir)
    m = art.manifest
    net = hef_network_name(m.model_id)
    sess = ort.InferenceSession(str(art.path), providers=["CPUExecutionProvider"])
    in_name = sess.get_inputs()[0].name
    out_names = [o.name for o in sess.get_outputs()]
    n, h, w, _ = calib_frames_bgr.shape
    ranges: dict[str, list[float]] = {k: [np.inf, -np.inf] for k in out_names}
    shapes: dict[str, tuple[int, ...]] = {}
    for i in range(n):
        x = _onnx_input(calib_frames_bgr[i : i + 1], art)
        for name, y in zip(out_names, sess.run(out_names, {in_name: x}), strict=True):
            ranges[name][0] = min(ranges[name][0], float(y.min()))
            ranges[name][1] = max(ranges[name][1], float(y.max()))
            y0 = y[0]
            layout = onnx_output_layout(art, name, y.ndim)
            shapes[name] = tuple(y0.transpose(1, 2, 0).shape) if layout == "NCHW" else tuple(y0.shape)
    outputs = []
    for i, name in enumerate(out_names):
        scale, zp = quant_from_range(*ranges[name])
        outputs.append(HefOutput(name=f"{net}/conv{i + 1}", onnx_name=name, shape=shapes[name], scale=scale,
                                 zero_point=zp))
    pre = m.preprocess
    hef = {
        "fake_hef_version": 1,
        "network_name": net,
        "arch": arch,
        "onnx": "model.onnx",
        "input": {
            "name": f"{net}/input_layer1", "onnx_name": in_name, "shape": [h, w, 3],
            "color_order": color_order, "onnx_color_order": pre.color_order,
            "scale": pre.scale, "mean": list(pre.mean), "std": list(pre.std),
        },
        "outputs": [
            {"name": o.name, "onnx_name": o.onnx_name, "shape": list(o.shape),
             "onnx_layout": onnx_output_layout(art, o.onnx_name, len(o.shape) + 1),
             "quant": {"scale": o.scale, "zero_point": o.zero_point}}
            for o in outputs
        ],
    }
    facts = CompileFacts(
        arch=arch,  # type: ignore[arg-type]
        dfc_version="fake-0",
        input_name=f"{net}/input_layer1",
        input_hw=(h, w),
        outputs=tuple(outputs),
        color_order=color_order,  # type: ignore[arg-type]
        recipe="tests/fakes/fake_hef.py write_fake_hef (fake compile for the fake hailo_platform)",
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(art.path, out_dir / "model.onnx")
    write_hef_artifact(art, facts, json.dumps(hef, indent=1).encode(), out_dir)
    load_artifact(out_dir)  # the manifest must validate and match the file
    return out_dir


# ------------------------------------------------------------------------------------------ tiny models

TINY_ANCHORS = {"min_sizes": [[8, 12], [24, 32], [48, 64]], "steps": [8, 16, 32], "variances": [0.1, 0.2],
                "clip": False}
TINY_LABELS = ["anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise"]


def _conv(name: str, x: str, out: str, cin: int, cout: int, k: int, stride: int,  # noqa: PLR0917
          rng: np.random.Generator, input_std: float = 1.0) -> tuple[onnx.NodeProto, list[onnx.TensorProto]]:
    # Weights scaled so outputs have unit-ish spread whatever the input range: detections stay sane.
    w_std = 1.0 / (input_std * np.sqrt(cin * k * k))
    wt = numpy_helper.from_array((rng.standard_normal((cout, cin, k, k)) * w_std).astype(np.float32), f"{name}_w")
    b = numpy_helper.from_array((rng.standard_normal(cout) * 0.5).astype(np.float32), f"{name}_b")
    node = helper.make_node("Conv", [x, f"{name}_w", f"{name}_b"], [out], name=name, kernel_shape=[k, k],
                            strides=[stride, stride])
    return node, [wt, b]


def save_test_artifact(model: onnx.ModelProto, out_dir: Path, manifest: dict[str, object]) -> Path:
    """Write ``model`` as ``out_dir/model.onnx`` with ``manifest`` completed (file, sha256, size, opset; licence
    and provenance unless given) and check that the artifact loads. A ``classes_file`` must already be there."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "model.onnx"
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    manifest.update(file="model.onnx", format="onnx", sha256=sha256_file(path), size_bytes=path.stat().st_size,
                    opset=17)
    manifest.setdefault("licence", "test-only")
    manifest.setdefault("provenance", {"source": "random weights (tests/fakes/fake_hef.py)",
                                       "recipe": "tiny test model"})
    (out_dir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    load_artifact(out_dir)
    return out_dir


def make_tiny_detector(out_dir: Path, hw: tuple[int, int] = (64, 96), seed: int = 0) -> Path:
    """A RetinaFace-shaped raw-heads detector: per stride 8/16/32 one strided conv per head, NCHW outputs."""
    rng = np.random.default_rng(seed)
    h, w = hw
    nodes, inits, outputs, heads, out_infos = [], [], [], [], []
    for stride in TINY_ANCHORS["steps"]:  # type: ignore[union-attr]
        head = {"stride": stride}
        for kind, ch in (("cls", 4), ("box", 8), ("landmarks", 20)):
            name = f"{kind}_{stride}"
            node, ws = _conv(f"conv_{name}", "image", name, 3, ch, stride, stride, rng, input_std=70.0)
            nodes.append(node)
            inits += ws
            shape = [1, ch, h // stride, w // stride]
            outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape))
            out_infos.append({"name": name, "shape": shape, "dtype": "float32", "layout": "NCHW"})
            head[kind] = name
        heads.append(head)
    graph = helper.make_graph(nodes, "tiny_detector",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, h, w])],
                              outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    manifest: dict[str, object] = {
        "model_id": "tiny-det", "task": "detector", "architecture": "tiny raw-heads test detector",
        "inputs": [{"name": "image", "shape": [1, 3, h, w], "dtype": "float32", "layout": "NCHW"}],
        "outputs": out_infos,
        "preprocess": {"input_size": [w, h], "resize": "letterbox", "color_order": "BGR", "layout": "NCHW",
                       "mean": [104.0, 117.0, 123.0], "std": [1.0, 1.0, 1.0]},
        "anchors": TINY_ANCHORS,
        "detector_outputs": {"kind": "raw_heads", "heads": heads, "heads_layout": "NCHW"},
    }
    return save_test_artifact(model, out_dir, manifest)


def make_tiny_classifier(out_dir: Path, size: int = 32, seed: int = 1) -> Path:
    """A 7-class classifier: strided conv -> global average pool -> flatten -> gemm; dynamic batch, RGB input."""
    rng = np.random.default_rng(seed)
    conv, ws = _conv("conv1", "input", "c1", 3, 16, 4, 4, rng, input_std=1.0)
    fc_w = numpy_helper.from_array((rng.standard_normal((16, 7)) * 0.5).astype(np.float32), "fc_w")
    fc_b = numpy_helper.from_array(np.zeros(7, np.float32), "fc_b")
    nodes = [
        conv,
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("GlobalAveragePool", ["r1"], ["p1"]),
        helper.make_node("Flatten", ["p1"], ["f1"], axis=1),
        helper.make_node("Gemm", ["f1", "fc_w", "fc_b"], ["logits"]),
    ]
    graph = helper.make_graph(nodes, "tiny_classifier",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, size, size])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 7])],
                              [*ws, fc_w, fc_b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    (out_dir).mkdir(parents=True, exist_ok=True)
    (out_dir / "classes.json").write_text(json.dumps(TINY_LABELS), encoding="utf-8")
    manifest: dict[str, object] = {
        "model_id": "tiny-cls", "task": "classifier", "architecture": "tiny test classifier",
        "inputs": [{"name": "input", "shape": ["N", 3, size, size], "dtype": "float32", "layout": "NCHW"}],
        "outputs": [{"name": "logits", "shape": ["N", 7], "dtype": "float32", "layout": "NC"}],
        "preprocess": {"input_size": [size, size], "resize": "stretch", "color_order": "RGB", "layout": "NCHW",
                       "scale": 1 / 255, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
        "labels": TINY_LABELS, "classes_file": "classes.json",
    }
    return save_test_artifact(model, out_dir, manifest)


def random_frames(n: int, hw: tuple[int, int], seed: int = 0) -> np.ndarray:
    """Smooth random uint8 BGR frames (blurred noise with a bright blob), (n, H, W, 3)."""
    rng = np.random.default_rng(seed)
    h, w = hw
    base = rng.integers(0, 256, (n, h // 4 + 1, w // 4 + 1, 3)).astype(np.float32)
    frames = np.repeat(np.repeat(base, 4, axis=1), 4, axis=2)[:, :h, :w]
    return np.ascontiguousarray(frames.astype(np.uint8))


def onnx_reference(onnx_dir: Path, frames_bgr: np.ndarray) -> list[dict[str, np.ndarray]]:
    """Run the ONNX artifact per frame on the float path (its own normalisation): the numbers a HEF approximates."""
    art = load_artifact(onnx_dir)
    sess = ort.InferenceSession(str(art.path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    res = []
    for i in range(frames_bgr.shape[0]):
        x = _onnx_input(frames_bgr[i : i + 1], art)
        res.append(dict(zip(names, sess.run(names, {sess.get_inputs()[0].name: x}), strict=True)))
    return res


def stack(seq: Sequence[np.ndarray]) -> np.ndarray:
    return np.concatenate(list(seq), axis=0)
