from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_agent.backends.base import Backend, BackendError, TensorSpec
from edge_agent.backends.onnx import OnnxBackend, _load_hint

onnx = pytest.importorskip("onnx", reason="building the tiny test graphs needs the onnx package")
from onnx import TensorProto, helper  # noqa: E402


def _save(graph: object, path: Path, opset: int = 17) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture
def scale_model(tmp_path: Path) -> Path:
    """y = x * 2 with x (N, 3, H, W) float32 (symbolic N, H, W); also z = ReduceMean(x) over C,H,W (N, 1)."""
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["y"]),
         helper.make_node("ReduceMean", ["x"], ["m"], axes=[1, 2, 3], keepdims=0),
         helper.make_node("Unsqueeze", ["m", "one"], ["z"])],
        "scale",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, "H", "W"]),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 1])],
        initializer=[two, helper.make_tensor("one", TensorProto.INT64, [1], [1])],
    )
    return _save(graph, tmp_path / "scale.onnx")


def test_specs_and_run(scale_model: Path) -> None:
    be = OnnxBackend(scale_model, intra_op_threads=1, inter_op_threads=1)
    assert isinstance(be, Backend) and be.kind == "onnx"
    assert be.inputs == {"x": TensorSpec("x", (None, 3, None, None), "float32")}
    assert be.outputs["y"] == TensorSpec("y", (None, 3, None, None), "float32")
    assert be.outputs["z"].shape == (None, 1)
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    out = be.run({"x": x})
    assert set(out) == {"y", "z"}
    np.testing.assert_array_equal(out["y"], x * 2)
    np.testing.assert_allclose(out["z"][:, 0], x.reshape(2, -1).mean(1), rtol=1e-6)
    be.close()
    with pytest.raises(BackendError, match="closed"):
        be.run({"x": x})


def test_session_options(scale_model: Path) -> None:
    be = OnnxBackend(scale_model, intra_op_threads=1, spin=False)
    opts = be._session.get_session_options()  # type: ignore[union-attr]
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert opts.intra_op_num_threads == 1
    spinning = OnnxBackend(scale_model, spin=True)._session.get_session_options()  # type: ignore[union-attr]
    assert spinning.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    assert opts.enable_mem_pattern is True
    no_pattern = OnnxBackend(scale_model, mem_pattern=False)._session.get_session_options()  # type: ignore[union-attr]
    assert no_pattern.enable_mem_pattern is False


def test_bad_feeds(scale_model: Path) -> None:
    be = OnnxBackend(scale_model)
    with pytest.raises(BackendError, match="do not match model inputs"):
        be.run({"image": np.zeros((1, 3, 2, 2), np.float32)})
    with pytest.raises(BackendError, match="must be float32"):
        be.run({"x": np.zeros((1, 3, 2, 2), np.uint8)})
    with pytest.raises(BackendError, match="inference failed"):
        be.run({"x": np.zeros((1, 4, 2, 2), np.float32)})


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="does not exist"):
        OnnxBackend(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(BackendError, match="cannot load"):
        OnnxBackend(junk)
    graph = helper.make_graph(
        [helper.make_node("NoSuchOp", ["x"], ["y"], domain="com.example")], "custom",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "custom.onnx"))
    with pytest.raises(BackendError, match="NoSuchOp"):
        OnnxBackend(tmp_path / "custom.onnx")
    with pytest.raises(BackendError, match="graph_optimization"):
        OnnxBackend(junk, graph_optimization="fast")  # type: ignore[arg-type]


def test_deformconv_hint_names_the_version() -> None:
    hint = _load_hint("Could not find an implementation for DeformConv(19) node with name ''")
    assert "1.25.1" in hint and "DeformConv" in hint
    assert _load_hint("some other failure") == ""


def test_deformconv_model_runs_on_this_onnxruntime(tmp_path: Path) -> None:
    """The pinned onnxruntime executes DeformConv (opset 19), which the DCN detector variants need."""
    graph = helper.make_graph(
        [helper.make_node("DeformConv", ["x", "w", "offset"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])],
        "dcn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4]),
         helper.make_tensor_value_info("offset", TensorProto.FLOAT, [1, 18, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 4, 4])],
        initializer=[helper.make_tensor("w", TensorProto.FLOAT, [1, 1, 3, 3], [0, 0, 0, 0, 1, 0, 0, 0, 0])],
    )
    be = OnnxBackend(_save(graph, tmp_path / "dcn.onnx", opset=19))
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    y = be.run({"x": x, "offset": np.zeros((1, 18, 4, 4), np.float32)})["y"]
    np.testing.assert_allclose(y, x)  # centre-tap kernel, zero offsets: identity
