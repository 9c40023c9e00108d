"""A user's own classifier, end to end: train on a real CSV fixture -> export -> the daemon (``edge-agent run``,
a subprocess configured by environment only) on a real sample video -> the published faces carry exactly the
model's labels.

Two models, both binary (``happy`` / ``other``, tests/fixtures/csv_tiny/binary_*.csv) and at a tiny 64 x 64 input
so the CPU run is quick: EfficientNet-B0 with seed 003's two-stage preset and MobileNetV3-Small finetuned.
A few optimisation steps do not make a useful classifier; what is checked is the contract (labels, order,
probabilities, input size from the manifest), not accuracy.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from edge_agent.manifest import load_artifact  # noqa: E402
from tests.support.daemon import daemon_env  # noqa: E402
from tests.support.stream import StreamCollector  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURE = REPO_ROOT / "tests" / "fixtures" / "csv_tiny"
LABELS = ["happy", "other"]
SINGLE_FACE_FRAMES = 72

MODELS = {
    "effb0-binary": ["--preset", "seed003", "--img-size", "64", "--stage-epochs", "1", "1"],
    "mnv3s-binary": ["--arch", "mobilenet_v3_small", "--img-size", "64", "--mode", "finetune", "--epochs", "2",
                     "--class-weights", "balanced"],
}
ARCH = {"effb0-binary": "efficientnet_b0", "mnv3s-binary": "mobilenet_v3_small"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each model trained for a few steps with build.train_classifier and exported with build.export.classifier,
    exactly the README's two commands (in process)."""
    from build.export.classifier import main as export_main
    from build.train_classifier import main as train_main

    root = tmp_path_factory.mktemp("custom")
    data = root / "data"
    shutil.copytree(FIXTURE, data)
    torch.set_num_threads(1)
    out: dict[str, Path] = {}
    for model_id, extra in MODELS.items():
        run = root / "runs" / model_id
        assert train_main([
            "--train-csv", str(data / "binary_train.csv"), "--val-csv", str(data / "binary_val.csv"),
            "--test-csv", str(data / "binary_test.csv"), "--project-root", str(data), "--out", str(run),
            "--batch", "4", "--workers", "0", "--seed", "1337", *extra,
        ]) == 0
        model_dir = root / "models" / model_id
        assert export_main(["--checkpoint", str(run / "best.pt"), "--out", str(model_dir),
                            "--model-id", model_id]) == 0
        out[model_id] = model_dir
    return out


@pytest.mark.slow
@pytest.mark.parametrize("model_id", sorted(MODELS))
def test_daemon_publishes_the_custom_models_labels(model_id: str, exported: dict[str, Path],
                                                   shipped_model: Callable[[str], Path],
                                                   asset: Callable[[str], Path], tmp_path: Path) -> None:
    model_dir = exported[model_id]
    art = load_artifact(model_dir)
    m = art.manifest
    assert m.labels == tuple(LABELS) and m.preprocess.input_size == (64, 64)
    assert m.architecture.startswith(ARCH[model_id])
    assert json.loads((model_dir / "classes.json").read_text()) == LABELS
    assert (model_dir / "MODEL_CARD.md").read_text().startswith(f"# {model_id}: {ARCH[model_id]}")

    endpoint = f"ipc://{tmp_path}/edge.sock"
    # The only change from the default configuration: which classifier directory (plus test plumbing).
    models = {"detector": shipped_model("detector/acwface-dcn"), "classifier": model_dir}
    env = daemon_env(models, endpoint, publisher__camera_id="custom", publisher__sndhwm="1000",
                     publisher__status_interval_s="0.5", source__pace="fast")
    sub = StreamCollector(endpoint)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "edge_agent", "run", "--source", str(asset("single_face.mp4")), "--once",
             "--backend", "onnx"],
            env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False,
        )
    finally:
        sub.close(drain_s=1.0)  # every body validated against the schema on arrival
    assert proc.returncode == 0, proc.stderr[-3000:]
    emotions, statuses = sub.emotions, sub.statuses
    assert [e.frame_id for e in emotions] == list(range(SINGLE_FACE_FRAMES))
    faces = [f for e in emotions for f in e.faces]
    assert len(faces) == SINGLE_FACE_FRAMES  # one face per frame, every one classified
    for f in faces:
        assert f.probs is not None and list(f.probs) == LABELS  # exactly the model's labels, classes.json order
        assert sum(f.probs.values()) == pytest.approx(1.0, abs=2e-3)
        assert f.label in LABELS and f.label == max(f.probs, key=lambda k: f.probs[k])  # type: ignore[index]
    assert statuses and statuses[-1].models.classifier == model_id
