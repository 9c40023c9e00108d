"""A tiny real 2-class ONNX classifier + manifest for the binary evaluation tests (no torch needed).

input (N, 3, 32, 32) RGB -> GlobalAveragePool -> Gemm -> 2 logits: ``non_teasing`` 0, ``teasing``
``GAIN * (mean R - mean B)`` of the normalised input. Its mean/std are deliberately not ImageNet's, so a result
that matches :func:`expected_positive_prob` proves the evaluation used the manifest's size, normalisation and
colour order.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

LABELS = ["non_teasing", "teasing"]  # seed 003: non_teasing = 0, teasing = 1 (positive)
SIZE = 32
MEAN = (0.5, 0.4, 0.3)
STD = (0.25, 0.2, 0.5)
GAIN = 2.0
MODEL_ID = "tiny-binary"


def make_binary_classifier(out_dir: Path) -> Path:
    pytest.importorskip("onnx", reason="building the tiny test classifier needs the onnx package")
    from onnx import TensorProto, helper

    from tests.fakes.fake_hef import save_test_artifact

    w = np.array([[0.0, 0.0, 0.0], [GAIN, 0.0, -GAIN]], np.float32)
    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
         helper.make_node("Flatten", ["pooled"], ["flat"]),
         helper.make_node("Gemm", ["flat", "w", "b"], ["logits"], transB=1)],
        "tiny_binary",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])],
        initializer=[helper.make_tensor("w", TensorProto.FLOAT, [2, 3], w.ravel().tolist()),
                     helper.make_tensor("b", TensorProto.FLOAT, [2], [0.0, 0.0])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    manifest: dict[str, object] = {
        "model_id": MODEL_ID, "task": "classifier", "architecture": "gap-linear (test graph)",
        "inputs": [{"name": "input", "shape": ["N", 3, SIZE, SIZE], "dtype": "float32", "layout": "NCHW"}],
        "outputs": [{"name": "logits", "shape": ["N", 2], "dtype": "float32", "layout": "NC"}],
        "preprocess": {"input_size": [SIZE, SIZE], "resize": "stretch", "color_order": "RGB", "layout": "NCHW",
                       "scale": 1 / 255, "mean": list(MEAN), "std": list(STD)},
        "labels": LABELS, "classes_file": "classes.json",
        "provenance": {"source": "test graph", "recipe": "tests/unit/binary_model.py"}, "licence": "MIT",
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "classes.json").write_text(json.dumps(LABELS), encoding="utf-8")
    return save_test_artifact(model, out_dir, manifest)


def expected_positive_prob(bgr: tuple[int, int, int]) -> float:
    """P(teasing) for a solid-colour image, by hand: normalise R and B as the manifest says, then the graph."""
    b, _, r = bgr
    x_r = (r / 255 - MEAN[0]) / STD[0]
    x_b = (b / 255 - MEAN[2]) / STD[2]
    return float(1 / (1 + np.exp(-GAIN * (x_r - x_b))))
