"""The Hailo backend against the fake ``hailo_platform`` (tests/fakes): results, batching, every error path."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from edge_agent.backends import hailo as hailo_mod
from edge_agent.backends.base import Backend, BackendError
from edge_agent.backends.hailo import HailoDevice, probe
from edge_agent.backends.hailo_manifest import quant_from_range
from edge_agent.manifest import MANIFEST_NAME, ManifestError, load_artifact
from edge_agent.settings import HailoSettings
from tests.fakes import fake_hef as fh
from tests.support.hailo import drop_fake_hailo_modules

FAKES = Path(__file__).resolve().parents[1] / "fakes"




@pytest.fixture(scope="module")
def arts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("hailo_arts")
    det = fh.make_tiny_detector(root / "det")
    cls = fh.make_tiny_classifier(root / "cls")
    frames = fh.random_frames(4, (64, 96), seed=0)
    crops = fh.random_frames(6, (32, 32), seed=3)
    return {
        "det_onnx": det, "cls_onnx": cls, "frames": frames, "crops": crops,
        "det": fh.write_fake_hef(det, root / "det_hef", frames),
        "cls": fh.write_fake_hef(cls, root / "cls_hef", crops),
        "cls_h8l": fh.write_fake_hef(cls, root / "cls_hef_h8l", crops, arch="hailo8l"),
    }


def _in(b: Any) -> str:
    return next(iter(b.inputs))


# ------------------------------------------------------------------------------------------- results


def test_detector_outputs_match_onnx_within_one_quantisation_step(fake_hailo: ModuleType, arts: dict[str, Any]) -> None:
    with HailoDevice.open(HailoSettings()) as dev:
        b = dev.load(load_artifact(arts["det"]))
        assert isinstance(b, Backend) and b.kind == "hailo"
        m = load_artifact(arts["det"]).manifest
        assert m.hailo is not None and m.detector_outputs is not None
        for i in range(2):
            out = b.run({_in(b): arts["frames"][i : i + 1]})
            ref = fh.onnx_reference(arts["det_onnx"], arts["frames"][i : i + 1])[0]
            for h in m.detector_outputs.heads:
                for kind in ("cls", "box", "landmarks"):
                    name = getattr(h, kind)
                    got = out[name]
                    want = ref[f"{kind}_{h.stride}"].transpose(0, 2, 3, 1)  # ONNX NCHW -> chip NHWC
                    assert got.shape == want.shape and got.dtype == np.float32
                    step = m.hailo.quant_info[name].scale
                    assert np.abs(got - want).max() <= 0.5 * step + 1e-4


def test_classifier_batch_matches_onnx(fake_hailo: ModuleType, arts: dict[str, Any]) -> None:
    with HailoDevice.open(HailoSettings()) as dev:
        b = dev.load(load_artifact(arts["cls"]))
        (name,) = b.outputs
        out = b.run({_in(b): arts["crops"]})[name]
        want = fh.stack([r["logits"] for r in fh.onnx_reference(arts["cls_onnx"], arts["crops"])])
        step = load_artifact(arts["cls"]).manifest.hailo.quant_info[name].scale  # type: ignore[union-attr]
        assert out.shape == (6, 7)
        assert np.abs(out - want).max() <= 0.5 * step + 1e-4
        assert (out.argmax(1) == want.argmax(1)).mean() >= 5 / 6


def test_specs_are_uint8_nhwc_in_float32_out_with_dynamic_batch(fake_hailo: ModuleType, arts: dict[str, Any]) -> None:
    with HailoDevice.open(HailoSettings()) as dev:
        b = dev.load(load_artifact(arts["cls"]))
        (spec,) = b.inputs.values()
        assert spec.shape == (None, 32, 32, 3) and spec.dtype == "uint8"
        (ospec,) = b.outputs.values()
        assert ospec.shape == (None, 7) and ospec.dtype == "float32"


def test_one_run_async_per_batch_split_only_by_the_async_queue(
    fake_hailo: ModuleType, arts: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from hailo_platform.pyhailort import pyhailort as fake

    calls: list[int] = []
    real = fake.ConfiguredInferModel.run_async

    def spy(self: Any, bindings: list[Any], callback: Any = None) -> Any:
        calls.append(len(bindings))
        return real(self, bindings, callback)

    monkeypatch.setattr(fake.ConfiguredInferModel, "run_async", spy)
    with HailoDevice.open(HailoSettings()) as dev:
        b = dev.load(load_artifact(arts["cls"]))
        b.run({_in(b): arts["crops"][:3]})
        assert calls == [3]  # three faces, one job with three bindings
        calls.clear()
        b.run({_in(b): arts["crops"]})
        assert calls == [4, 2]  # the fake's async queue holds 4 frames
        calls.clear()
        out = b.run({_in(b): arts["crops"][:0]})
        assert calls == [] and next(iter(out.values())).shape == (0, 7)


def test_non_contiguous_input_is_made_contiguous(fake_hailo: ModuleType, arts: dict[str, Any]) -> None:
    flipped = arts["crops"][:, :, ::-1]  # a view with negative strides
    assert not flipped.flags.c_contiguous
    with HailoDevice.open(HailoSettings()) as dev:
        b = dev.load(load_artifact(arts["cls"]))
        got = next(iter(b.run({_in(b): flipped}).values()))
        want = next(iter(b.run({_in(b): np.ascontiguousarray(flipped)}).values()))
        assert np.array_equal(got, want)


def test_wrong_input_dtype_or_shape_is_a_clear_error(fake_hailo: ModuleType, arts: dict[str, Any]) -> None:
    with HailoDevice.open(HailoSettings()) as dev:
        b = dev.load(load_artifact(arts["cls"]))
        with pytest.raises(BackendError, match="uint8"):
            b.run({_in(b): arts["crops"].astype(np.float32)})
        with pytest.raises(BackendError, match="uint8 \\(N, 32, 32, 3\\)"):
            b.run({_in(b): arts["crops"][:, :16]})
        with pytest.raises(BackendError, match="do not match the HEF input"):
            b.run({"input": arts["crops"]})


def test_hailo8l_hef_runs_on_a_hailo8(fake_hailo: ModuleType, arts: dict[str, Any]) -> None:
    with HailoDevice.open(HailoSettings()) as dev:
        assert dev.arch == "HAILO8"
        b = dev.load(load_artifact(arts["cls_h8l"]))
        assert next(iter(b.run({_in(b): arts["crops"][:1]}).values())).shape == (1, 7)


def test_open_uses_one_round_robin_vdevice_in_group_shared(fake_hailo: ModuleType, arts: dict[str, Any]) -> None:
    from hailo_platform.pyhailort import pyhailort as fake

    with HailoDevice.open(HailoSettings()) as dev:
        params = dev._vdevice._params
        assert params.scheduling_algorithm == fake.HailoSchedulingAlgorithm.ROUND_ROBIN
        assert params.group_id == "SHARED" and params.multi_process_service is False
        dev.load(load_artifact(arts["det"]))
        dev.load(load_artifact(arts["cls"]))  # both HEFs on the one VDevice
        assert fake._open_vdevices == {"SHARED": 1}
    assert fake._open_vdevices == {}


def test_probe_reports_the_device(fake_hailo: ModuleType) -> None:
    ok, reason = probe()
    assert ok and "4.20.0" in reason and "HAILO8" in reason


# --------------------------------------------------------------------------------------- error paths


def test_probe_without_hailo_platform_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    drop_fake_hailo_modules()
    monkeypatch.setitem(sys.modules, "hailo_platform", None)  # import raises ImportError
    ok, reason = probe()
    assert not ok
    assert "hailo_platform not importable" in reason
    assert "sudo apt install hailo-all" in reason and "--system-site-packages" in reason
    with pytest.raises(BackendError, match="hailo-all"):
        HailoDevice.open(HailoSettings())


def test_device_held_by_another_process(fake_hailo: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_HAILO_FAULTS", "device_busy")
    with pytest.raises(BackendError) as err:
        HailoDevice.open(HailoSettings())
    msg = str(err.value)
    assert "held by another process" in msg
    assert "multi_process_service = true" in msg and "hailort.service" in msg
    ok, reason = probe()
    assert not ok and "held by another process" in reason


def test_second_vdevice_in_the_process_is_refused_like_hailort(fake_hailo: ModuleType) -> None:
    with HailoDevice.open(HailoSettings()), pytest.raises(BackendError, match="held by another process"):
        HailoDevice.open(HailoSettings())
    HailoDevice.open(HailoSettings()).close()  # released: opens again


def test_device_held_by_another_real_process(fake_hailo: ModuleType) -> None:
    import os
    import subprocess

    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, hailo_platform as hp; vd = hp.VDevice(hp.VDevice.create_params()); "
                               "print('ready', flush=True); sys.stdin.read()"],
        env={**os.environ, "PYTHONPATH": str(FAKES)}, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        with pytest.raises(BackendError, match="held by another process"):
            HailoDevice.open(HailoSettings())
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)
    HailoDevice.open(HailoSettings()).close()  # the other process is gone: the device opens


def test_no_device(fake_hailo: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_HAILO_FAULTS", "no_device")
    with pytest.raises(BackendError, match="no Hailo device found"):
        HailoDevice.open(HailoSettings())


def test_driver_library_mismatch_prints_both_versions(
    fake_hailo: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FAKE_HAILO_DRIVER_VERSION", "4.19.0")
    version_file = tmp_path / "hailo_pci_version"
    version_file.write_text("4.19.0\n")
    monkeypatch.setattr(hailo_mod, "DRIVER_VERSION_FILE", version_file)
    with pytest.raises(BackendError) as err:
        HailoDevice.open(HailoSettings())
    msg = str(err.value)
    assert "driver 4.19.0" in msg and "library 4.20.0" in msg and "hailo-all" in msg


@pytest.mark.parametrize(("version", "needle"), [("5.1.0", "Hailo-10/15"), ("4.17.0", "too old")])
def test_library_version_outside_the_hailo8_range(
    fake_hailo: ModuleType, monkeypatch: pytest.MonkeyPatch, version: str, needle: str
) -> None:
    drop_fake_hailo_modules()
    monkeypatch.setenv("FAKE_HAILO_VERSION", version)
    monkeypatch.setenv("FAKE_HAILO_DRIVER_VERSION", version)
    with pytest.raises(BackendError, match=needle):
        HailoDevice.open(HailoSettings())


def test_hef_for_another_arch_says_both(fake_hailo: ModuleType, arts: dict[str, Any],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_HAILO_ARCH", "HAILO8L")
    with HailoDevice.open(HailoSettings()) as dev, pytest.raises(BackendError) as err:
        dev.load(load_artifact(arts["cls"]))
    assert "compiled for hailo8" in str(err.value) and "HAILO8L" in str(err.value)


def test_arch_mismatch_found_at_configure_when_identify_is_unavailable(
    fake_hailo: ModuleType, arts: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Through hailort.service the device is not identified up front; HailoRT's configure() refuses the HEF.
    monkeypatch.setenv("FAKE_HAILO_ARCH", "HAILO8L")
    with HailoDevice.open(HailoSettings(multi_process_service=True)) as dev:
        assert dev.arch is None
        with pytest.raises(BackendError, match="compiled for hailo8"):
            dev.load(load_artifact(arts["cls"]))


def test_multi_process_service_down(fake_hailo: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_HAILO_FAULTS", "service_down")
    with pytest.raises(BackendError, match=r"hailort\.service is not reachable"):
        HailoDevice.open(HailoSettings(multi_process_service=True))


def test_timeout_once_recreates_the_configured_model_and_succeeds(
    fake_hailo: ModuleType, arts: dict[str, Any], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("FAKE_HAILO_FAULTS", "timeout_once")
    from hailo_platform.pyhailort import pyhailort as fake

    monkeypatch.setattr(fake, "_jobs_started", [0])
    with HailoDevice.open(HailoSettings(timeout_ms=50)) as dev:
        b = dev.load(load_artifact(arts["cls"]))
        first_cfg = b._configured
        with caplog.at_level(logging.WARNING):
            out = next(iter(b.run({_in(b): arts["crops"][:2]}).values()))
        assert b._configured is not first_cfg
        assert "recreating the configured model once" in caplog.text
        want = fh.stack([r["logits"] for r in fh.onnx_reference(arts["cls_onnx"], arts["crops"][:2])])
        assert np.abs(out - want).max() < 0.1


def test_timeout_always_fails_loudly(fake_hailo: ModuleType, arts: dict[str, Any],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_HAILO_FAULTS", "timeout_always")
    with HailoDevice.open(HailoSettings(timeout_ms=20)) as dev:
        b = dev.load(load_artifact(arts["cls"]))
        with pytest.raises(BackendError, match=r"timed out again .*timeout_ms=20"):
            b.run({_in(b): arts["crops"][:1]})


def test_onnx_artifact_is_refused_with_the_fix(fake_hailo: ModuleType, arts: dict[str, Any]) -> None:
    with HailoDevice.open(HailoSettings()) as dev, pytest.raises(BackendError, match=r"build\.compile_hef"):
        dev.load(load_artifact(arts["cls_onnx"]))


def test_manifest_that_does_not_match_the_hef_is_refused(
    fake_hailo: ModuleType, arts: dict[str, Any], tmp_path: Path
) -> None:
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(arts["cls"], bad)
    raw = json.loads((bad / MANIFEST_NAME).read_text())
    raw["outputs"][0]["name"] = "tiny_cls/fc9"
    raw["hailo"]["quant_info"] = {"tiny_cls/fc9": {"scale": 0.1, "zero_point": 128}}
    (bad / MANIFEST_NAME).write_text(json.dumps(raw))
    with HailoDevice.open(HailoSettings()) as dev, pytest.raises(ManifestError, match="output names"):
        dev.load(load_artifact(bad))


# ---------------------------------------------------------------------------- fake fidelity checks


def test_fake_enforces_c_contiguous_buffers_and_the_scheduler(fake_hailo: ModuleType, arts: dict[str, Any]) -> None:
    hp = fake_hailo
    from hailo_platform.pyhailort.pyhailort import HailoRTException, HailoRTInvalidOperationException

    params = hp.VDevice.create_params()
    params.scheduling_algorithm = hp.HailoSchedulingAlgorithm.NONE
    with hp.VDevice(params) as vd:
        im = vd.create_infer_model(str(load_artifact(arts["cls"]).path))
        with im.configure() as cfg:
            b = cfg.create_bindings()
            with pytest.raises(HailoRTException, match="C_CONTIGUOUS"):
                b.input().set_buffer(arts["crops"][0][:, ::-1])
            b.input().set_buffer(np.ascontiguousarray(arts["crops"][0]))
            b.output().set_buffer(np.empty(im.output().shape, np.uint8))
            with pytest.raises(HailoRTInvalidOperationException, match="Invalid operation"):
                cfg.run_async([b])  # no scheduler and not activated


def test_quant_range_includes_zero_and_covers_the_range() -> None:
    scale, zp = quant_from_range(-1.0, 3.0)
    assert scale == pytest.approx(4 / 255)
    assert (0 - zp) * scale == pytest.approx(-1.0, abs=scale)
    assert (255 - zp) * scale == pytest.approx(3.0, abs=scale)
    assert quant_from_range(2.0, 5.0)[1] == 0.0  # range widened to include 0


# ------------------------------------------------------------------------------- through the Engine


def _settings(arts: dict[str, Any], kind: str, **hailo: Any) -> Any:
    from edge_agent.settings import Settings

    return Settings(
        backend={"kind": kind, "hailo": hailo},
        detector={"model": arts["det_onnx"], "hailo_model": arts["det"], "score_threshold": 0.5},
        classifier={"model": arts["cls_onnx"], "hailo_model": arts["cls"]},
    )


def test_engine_on_hailo_matches_engine_on_onnx(fake_hailo: ModuleType, arts: dict[str, Any],
                                                tmp_path: Path) -> None:
    from edge_agent.engine import build_engine
    from edge_agent.vision.crop import crop_faces

    frame = np.ascontiguousarray(np.repeat(np.repeat(arts["frames"][1], 2, axis=0), 2, axis=1))  # 128x192
    onnx_engine = build_engine(_settings(arts, "onnx"))
    try:
        assert onnx_engine.backend_kind == "onnx"
        d_onnx = onnx_engine.detector.detect(frame)
        e_onnx = onnx_engine.classifier.classify(frame, d_onnx)
    finally:
        onnx_engine.close()
    # Calibrate the classifier HEF on crops made the daemon's way (as build/calibration.py does): noise crops
    # would give too narrow output ranges and clip the logits of real crops.
    crops = crop_faces(frame, d_onnx, (32, 32), margin=0.2)
    arts_cal = {**arts, "cls": fh.write_fake_hef(arts["cls_onnx"], tmp_path / "cls_cal", crops)}
    engine = build_engine(_settings(arts_cal, "hailo"))
    try:
        assert engine.backend_kind == "hailo"
        engine.warm_up()
        d_hailo = engine.detector.detect(frame)
        e_hailo = engine.classifier.classify(frame, d_onnx)  # same faces: isolates the classifier
    finally:
        engine.close()
    # Random weights: many weak, overlapping candidates; quantisation may reorder near-ties. Every confident
    # ONNX face must have a Hailo twin.
    confident = d_onnx.boxes[d_onnx.scores >= 0.7]
    assert len(confident) > 0
    for box in confident:
        assert max(_iou(box, other) for other in d_hailo.boxes) >= 0.7, (box, d_hailo.boxes)
    assert e_hailo.labels == e_onnx.labels
    assert np.abs(e_hailo.probs - e_onnx.probs).max() < 0.02


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return float(inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter))


def test_engine_auto_takes_hailo_when_the_device_opens_and_onnx_when_busy(
    fake_hailo: ModuleType, arts: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from edge_agent.engine import build_engine

    engine = build_engine(_settings(arts, "auto"))
    try:
        assert engine.backend_kind == "hailo" and "HAILO8" in engine.backend_reason
    finally:
        engine.close()
    monkeypatch.setenv("FAKE_HAILO_FAULTS", "device_busy")
    engine = build_engine(_settings(arts, "auto"))
    try:
        assert engine.backend_kind == "onnx" and "held by another process" in engine.backend_reason
    finally:
        engine.close()
    with pytest.raises(BackendError, match="held by another process"):
        build_engine(_settings(arts, "hailo"))  # configured hailo never falls back
