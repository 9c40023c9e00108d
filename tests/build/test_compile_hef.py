"""HEF build parts that need no Dataflow Compiler: model script, end nodes, output mapping, manifest, CLI,
calibration sets."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import helper

from build import calibration, compile_hef
from edge_agent.backends.hailo_manifest import CompileFacts, HefOutput, hef_manifest, write_hef_artifact
from edge_agent.backends.onnx import OnnxBackend
from edge_agent.detector import FaceDetector
from edge_agent.manifest import load_artifact
from tests.fakes import fake_hef as fh

FAKES = Path(__file__).resolve().parents[1] / "fakes"




@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {"det": fh.make_tiny_detector(root / "det"), "cls": fh.make_tiny_classifier(root / "cls")}


def test_model_script_folds_imagenet_normalisation_and_bgr_to_rgb(tiny: dict[str, Path]) -> None:
    script = compile_hef.model_script(load_artifact(tiny["cls"]), gpu=False, calibset_size=1024)
    lines = script.splitlines()
    assert lines[0] == "normalization1 = normalization([123.675, 116.28, 103.53], [58.395, 57.12, 57.375])"
    assert "input_conversion = input_conversion(bgr_to_rgb)" in lines
    assert "model_optimization_flavor(optimization_level=0, compression_level=0)" in lines
    assert "model_optimization_config(calibration, batch_size=8, calibset_size=1024)" in lines


def test_model_script_for_a_bgr_detector_has_no_colour_conversion(tiny: dict[str, Path]) -> None:
    script = compile_hef.model_script(load_artifact(tiny["det"]), gpu=True)
    assert script.splitlines()[0] == "normalization1 = normalization([104.0, 117.0, 123.0], [1.0, 1.0, 1.0])"
    assert "input_conversion" not in script
    assert "optimization_level=2" in script


def test_end_nodes_are_the_head_convs_even_behind_a_transpose(tiny: dict[str, Path]) -> None:
    model = onnx.load(str(load_artifact(tiny["det"]).path))
    ends = compile_hef.end_nodes(model, ["cls_8", "box_32"])
    assert ends == {"cls_8": "conv_cls_8", "box_32": "conv_box_32"}
    # An NHWC export ends in Transpose nodes; the Hailo graph still ends at the convs.
    model.graph.node.append(helper.make_node("Transpose", ["cls_8"], ["cls_8_nhwc"], name="t0", perm=[0, 2, 3, 1]))
    assert compile_hef.end_nodes(model, ["cls_8_nhwc"]) == {"cls_8_nhwc": "conv_cls_8"}
    name, dims = compile_hef.start_node(model)
    assert name == "image" and dims == [1, 3, 64, 96]


def test_hef_outputs_are_mapped_back_through_original_names() -> None:
    hn = {"layers": {
        "net/conv41": {"type": "conv", "original_names": ["conv_cls_8"]},
        "net/conv42": {"type": "conv", "original_names": ["conv_box_8"]},
        "net/output_layer1": {"type": "output_layer", "input": ["net/conv41"]},
        "net/output_layer2": {"type": "output_layer", "input": ["net/conv42"]},
    }}
    vstreams = [("net/conv41", (8, 12, 4), 0.05, 120.0), ("net/conv42", (8, 12, 8), 0.02, 128.0)]
    outs = compile_hef.map_hef_outputs(hn, "net", {"cls_8": "conv_cls_8", "box_8": "conv_box_8"}, vstreams)
    assert outs == [HefOutput("net/conv41", "cls_8", (8, 12, 4), 0.05, 120.0),
                    HefOutput("net/conv42", "box_8", (8, 12, 8), 0.02, 128.0)]
    with pytest.raises(ValueError, match="no HEF output for ONNX output 'lm_8'"):
        compile_hef.map_hef_outputs(hn, "net", {"lm_8": "conv_lm_8"}, vstreams)


def _facts_for(art_dir: Path) -> CompileFacts:
    art = load_artifact(art_dir)
    model = onnx.load(str(art.path))
    import onnxruntime as ort

    sess = ort.InferenceSession(str(art.path), providers=["CPUExecutionProvider"])
    x = np.zeros([d if isinstance(d, int) else 1 for d in sess.get_inputs()[0].shape], np.float32)
    outs = []
    for i, (o, y) in enumerate(zip(sess.get_outputs(), sess.run(None, {sess.get_inputs()[0].name: x}), strict=True)):
        shape = tuple(y[0].transpose(1, 2, 0).shape) if y.ndim == 4 else tuple(y[0].shape)
        outs.append(HefOutput(f"net/conv{i + 1}", o.name, shape, 0.1, 128.0))
    _, dims = compile_hef.start_node(model)
    return CompileFacts(arch="hailo8l", dfc_version="3.31.0", input_name="net/input_layer1",
                        input_hw=(compile_hef.net_input_shape(art, dims)[2], compile_hef.net_input_shape(art, dims)[3]),
                        outputs=tuple(outs), color_order="BGR", recipe="test")


def test_manifest_from_a_fake_compile_result(tiny: dict[str, Path], tmp_path: Path) -> None:
    onnx_art = load_artifact(tiny["det"])
    out = write_hef_artifact(onnx_art, _facts_for(tiny["det"]), b"not really a hef", tmp_path / "hef")
    art = load_artifact(out)  # validates, sha256 and size match the written file
    m = art.manifest
    assert m.format == "hef" and m.model_id == "tiny-det-hailo8l" and art.path.name == "model.hef"
    assert m.hailo is not None and m.hailo.arch == "hailo8l" and m.hailo.dfc_version == "3.31.0"
    assert set(m.hailo.quant_info) == {t.name for t in m.outputs}
    assert m.preprocess.dtype == "uint8" and m.preprocess.layout == "NHWC" and m.preprocess.color_order == "BGR"
    assert m.inputs[0].shape == ("N", 64, 96, 3)
    assert m.detector_outputs is not None and m.detector_outputs.heads_layout == "NHWC"
    h8 = m.detector_outputs.heads[0]
    assert (h8.stride, h8.cls) == (8, "net/conv1")  # ONNX cls_8 was the first output
    shapes = {t.name: t.shape for t in m.outputs}
    assert shapes[h8.cls] == ("N", 8, 12, 4)
    assert m.anchors == onnx_art.manifest.anchors


def test_classifier_manifest_keeps_labels_and_copies_classes(tiny: dict[str, Path], tmp_path: Path) -> None:
    out = write_hef_artifact(load_artifact(tiny["cls"]), _facts_for(tiny["cls"]), b"x", tmp_path / "c")
    m = load_artifact(out).manifest
    assert m.labels == tuple(fh.TINY_LABELS) and (out / "classes.json").is_file()
    assert m.outputs[0].shape == ("N", 7) and m.outputs[0].layout == "NC"


def test_a_decoded_detector_cannot_become_a_hef(shipped_model: Callable[[str], Path], tmp_path: Path) -> None:
    art = load_artifact(shipped_model("detector/retinaface-mnet025"))
    (tmp_path / "model.hef").write_bytes(b"x")
    facts = CompileFacts(arch="hailo8", dfc_version="x", input_name="i", input_hw=(640, 640),
                         outputs=tuple(HefOutput(f"n/{t.name}", t.name, (1,), 1.0, 0.0) for t in art.manifest.outputs),
                         color_order="BGR", recipe="t")
    with pytest.raises(ValueError, match="raw-heads deploy variant"):
        hef_manifest(art, facts, tmp_path / "model.hef")


def test_cli_without_the_dfc_exits_2_with_the_reason(tiny: dict[str, Path], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    if importlib.util.find_spec("hailo_sdk_client") is not None:
        pytest.skip("the Dataflow Compiler is installed here")
    rc = compile_hef.main(["--detector", str(tiny["det"]), "--classifier", str(tiny["cls"]), "--calib",
                           str(tmp_path), "--out", str(tmp_path / "out")])
    assert rc == compile_hef.EXIT_NO_DFC
    err = capsys.readouterr().err
    assert "hailo_sdk_client" in err and "x86-64" in err and "docs/hailo.md" in err


def test_cli_refuses_a_detector_that_is_not_the_deploy_variant(shipped_model: Callable[[str], Path],
                                                               tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        compile_hef.main(["--detector", str(shipped_model("detector/retinaface-mnet025")), "--calib", str(tmp_path),
                          "--out", str(tmp_path)])
    assert exc.value.code == 2


def test_load_calib_checks_shape(tmp_path: Path) -> None:
    np.save(tmp_path / calibration.CLASSIFIER_FILE, np.zeros((4, 160, 160, 3), np.uint8))
    assert compile_hef.load_calib(tmp_path, "classifier", (160, 160)).shape == (4, 160, 160, 3)
    with pytest.raises(ValueError, match=r"expected uint8 \(N, 384, 640, 3\)"):
        np.save(tmp_path / calibration.DETECTOR_FILE, np.zeros((4, 640, 640, 3), np.uint8))
        compile_hef.load_calib(tmp_path, "detector", (384, 640))


def test_calibration_sets_from_real_media(shipped_model: Callable[[str], Path],
                                          asset: Callable[[str], Path]) -> None:
    art = load_artifact(shipped_model("detector/retinaface-mnet025"))
    det = FaceDetector(art, OnnxBackend(art.path, intra_op_threads=1))
    frames = [(n, cv2.imread(str(asset(n)))) for n in ("multi_face.jpg", "single_face.jpg")]
    sets = calibration.build_sets(det, (640, 384), (160, 160), 100, frames=iter(frames))
    assert sets.detector.shape == (2, 384, 640, 3) and sets.detector.dtype == np.uint8
    # Letterboxed exactly as the daemon does it: padding is black at the bottom or right.
    assert sets.detector[0][-1].max() == 0 or sets.detector[0][:, -1].max() == 0
    assert sets.classifier.shape[1:] == (160, 160, 3) and sets.classifier.dtype == np.uint8
    assert sets.faces_per_source["multi_face.jpg"] >= 4 and sets.faces_per_source["single_face.jpg"] == 1
    assert len(sets.classifier) == sum(sets.faces_per_source.values())
    sample = calibration.detector_sample(frames[0][1], (640, 384))
    assert np.array_equal(sample, sets.detector[0])
