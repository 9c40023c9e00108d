"""CSV trainer: pure helpers (hand-computed) and a one-epoch smoke run on a tiny real fixture."""

from __future__ import annotations

import csv
import json
import logging
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from build.classifier_data import (  # noqa: E402
    DataError,
    read_csv_split,
    read_folder_split,
    resolve_classes,
    to_input,
)
from build.nets.mobilenetv3 import mobilenet_v3_small  # noqa: E402
from build.train_classifier import (  # noqa: E402
    class_weights,
    classification_metrics,
    main,
    set_trainable,
    soft_target_loss,
    stage_schedule,
    warmup_cosine,
)

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "csv_tiny"


def test_classification_metrics_by_hand() -> None:
    # true: a a a b b c ; pred: a a b b c c
    m = classification_metrics([0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 2, 2], ["a", "b", "c"])
    assert m["top1"] == pytest.approx(4 / 6)
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    a, b, c = (m["per_class"][k] for k in "abc")
    assert (a["precision"], a["recall"]) == (1.0, pytest.approx(2 / 3))
    assert (b["precision"], b["recall"]) == (0.5, 0.5)
    assert (c["precision"], c["recall"]) == (0.5, 1.0)
    f1 = [0.8, 0.5, 2 / 3]
    assert m["macro_f1"] == pytest.approx(sum(f1) / 3)


def test_class_weights() -> None:
    assert class_weights([10, 30], "none") == [1.0, 1.0]
    w = class_weights([10, 30], "balanced")
    assert w[0] / w[1] == pytest.approx(3.0)
    assert sum(w) / 2 == pytest.approx(1.0)
    e = class_weights([10, 1000], "effective", beta=0.99)
    assert e[0] > e[1]
    assert class_weights([5, 0], "balanced")[1] == 0.0
    with pytest.raises(ValueError, match="unknown class-weight"):
        class_weights([1], "inverse")


def test_soft_target_loss_matches_ce_and_focal_downweights_easy() -> None:
    logits = torch.tensor([[4.0, 0.0, 0.0], [0.2, 0.1, 0.0]])
    y = torch.tensor([0, 2])
    onehot = torch.nn.functional.one_hot(y, 3).float()
    ce = soft_target_loss(logits, onehot)
    assert ce.item() == pytest.approx(torch.nn.functional.cross_entropy(logits, y).item(), rel=1e-6)
    focal = soft_target_loss(logits, onehot, gamma=2.0)
    assert focal.item() < ce.item()
    w = torch.tensor([1.0, 1.0, 3.0])
    weighted = soft_target_loss(logits, onehot, w)
    assert weighted.item() > ce.item()


def test_warmup_cosine() -> None:
    assert warmup_cosine(0, 100, 10) == pytest.approx(0.1)
    assert warmup_cosine(9, 100, 10) == pytest.approx(1.0)
    assert warmup_cosine(10, 100, 10) == pytest.approx(1.0)
    assert warmup_cosine(100, 100, 10) == pytest.approx(0.01)
    assert warmup_cosine(55, 100, 10) == pytest.approx(0.01 + 0.99 * 0.5)


def test_stage_schedule_and_trainable_sets() -> None:
    assert stage_schedule("probe", 3) == [1, 1, 1]
    assert stage_schedule("finetune", 10) == [1, 1, 2, 2, 2, 3, 3, 3, 3, 3]
    assert stage_schedule("finetune", 1) == [1]
    m = mobilenet_v3_small(3)
    set_trainable(m, 1)
    trainable = {n.split(".")[0] + "." + n.split(".")[1] for n, p in m.named_parameters() if p.requires_grad}
    assert trainable == {"classifier.0", "classifier.3"}
    set_trainable(m, 2)
    trainable = {".".join(n.split(".")[:2]) for n, p in m.named_parameters() if p.requires_grad}
    assert trainable == {"classifier.0", "classifier.3", "features.10", "features.11", "features.12"}
    set_trainable(m, 3)
    assert all(p.requires_grad for p in m.parameters())


def test_csv_reader_label_columns_and_errors(tmp_path: Path) -> None:
    train = read_csv_split(FIXTURE / "train.csv", FIXTURE)
    assert len(train) == 8
    assert train[0].label == "happy" and train[0].path == FIXTURE / "images" / "multi_face_0.jpg"
    assert resolve_classes(train) == ["anger", "disgust", "happy", "neutral", "surprised"]
    assert resolve_classes(train, ["happy", "surprised", "neutral", "anger", "disgust"])[0] == "happy"
    with pytest.raises(DataError, match="lacks labels"):
        resolve_classes(train, ["happy"])
    bad = tmp_path / "bad.csv"
    bad.write_text("path,emotion\na.jpg,happy\n")
    with pytest.raises(DataError, match="label columns"):
        read_csv_split(bad, tmp_path)
    kor = tmp_path / "kor.csv"
    kor.write_text("path,orig_kor\na.jpg,기쁨\n", encoding="utf-8")
    assert read_csv_split(kor, tmp_path)[0].label == "기쁨"


def test_folder_layout(tmp_path: Path) -> None:
    for cls, names in {"happy": ["multi_face_0.jpg", "single_face_0.jpg"], "anger": ["15-f13-anc-ph_0.jpg"]}.items():
        (tmp_path / cls).mkdir()
        for n in names:
            shutil.copy(FIXTURE / "images" / n, tmp_path / cls / n)
    samples = read_folder_split(tmp_path)
    assert sorted((s.label, s.path.name) for s in samples) == [
        ("anger", "15-f13-anc-ph_0.jpg"), ("happy", "multi_face_0.jpg"), ("happy", "single_face_0.jpg")]


def test_to_input_is_imagenet_normalised_rgb() -> None:
    import numpy as np

    img = np.zeros((50, 70, 3), np.uint8)
    img[..., 2] = 255  # pure red in BGR
    x = to_input(img)
    assert x.shape == (3, 160, 160) and x.dtype == np.float32
    assert x[0, 0, 0] == pytest.approx((1 - 0.485) / 0.229, rel=1e-5)
    assert x[2, 0, 0] == pytest.approx((0 - 0.406) / 0.225, rel=1e-5)


def test_one_epoch_smoke_run(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = tmp_path / "data"
    shutil.copytree(FIXTURE, data)
    out = tmp_path / "run"
    torch.set_num_threads(1)
    with caplog.at_level(logging.WARNING, logger="build.classifier_data"):
        rc = main([
            "--train-csv", str(data / "train.csv"), "--val-csv", str(data / "val.csv"),
            "--test-csv", str(data / "test.csv"), "--project-root", str(data), "--out", str(out),
            "--mode", "finetune", "--epochs", "1", "--batch", "4", "--workers", "0", "--lr-head", "1e-3",
            "--lr-backbone", "1e-4", "--seed", "1337", "--class-weights", "balanced", "--oversample",
            "--focal-gamma", "2", "--mixup", "0.2", "--patience", "3",
        ])
    assert rc == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum("missing_face.jpg" in w for w in warnings) == 1
    assert sum("corrupt_face.jpg" in w for w in warnings) == 1

    for name in ("best.pt", "val_metrics_best.json", "test_metrics.json", "test_preds.csv", "classes.json",
                 "history.json"):
        assert (out / name).is_file(), name
    classes = json.loads((out / "classes.json").read_text())
    assert classes == ["anger", "disgust", "happy", "neutral", "surprised"]

    for name in ("val_metrics_best.json", "test_metrics.json"):
        m = json.loads((out / name).read_text())
        assert set(m) >= {"top1", "macro_f1", "per_class", "confusion_matrix", "classes", "n"}
        assert 0.0 <= m["top1"] <= 1.0 and 0.0 <= m["macro_f1"] <= 1.0
        assert set(m["per_class"]) == set(classes)
        assert all(set(v) == {"precision", "recall", "f1", "support"} for v in m["per_class"].values())
        assert len(m["confusion_matrix"]) == len(classes)
        assert sum(map(sum, m["confusion_matrix"])) == m["n"]
    test_m = json.loads((out / "test_metrics.json").read_text())
    assert test_m["n"] == 3

    with (out / "test_preds.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["path"] for r in rows] == ["images/multi_face_3.jpg", "images/0-f15-hao-ph_0.jpg",
                                         "images/corrupt_face.jpg"]
    assert all(r["true"] == "happy" and r["pred"] in classes for r in rows)
    correct = sum(r["true"] == r["pred"] for r in rows)
    assert test_m["top1"] == pytest.approx(correct / 3)

    ckpt = torch.load(out / "best.pt", map_location="cpu", weights_only=False)
    assert ckpt["classes"] == classes and ckpt["arch"] == "mobilenet_v3_small"
    model = mobilenet_v3_small(len(classes))
    model.load_state_dict(ckpt["state_dict"])
    history = json.loads((out / "history.json").read_text())
    assert len(history) == 1 and history[0]["stage"] == 1


def _fixture_copy(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(FIXTURE, data)
    return data


def test_parse_args_preset_and_arch_defaults() -> None:
    from build.train_classifier import parse_args

    a = parse_args(["--out", "x", "--preset", "seed003"])
    assert (a.arch, a.img_size, a.mode, a.stage_epochs, a.batch) == ("efficientnet_b0", 224, "two_stage", [15, 20], 32)
    assert (a.optimizer, a.lr_head, a.stage2_lr_factor, a.weight_decay, a.dropout) == ("adam", 1e-3, 0.1, 1e-4, 0.3)
    assert (a.class_weights, a.plateau_patience, a.patience, a.select) == ("balanced", 3, 5, "val_loss")
    b = parse_args(["--out", "x", "--preset", "seed003", "--img-size", "96", "--dropout", "0.5"])
    assert (b.img_size, b.dropout, b.arch) == (96, 0.5, "efficientnet_b0")  # explicit flags win over the preset
    c = parse_args(["--out", "x"])
    assert (c.arch, c.img_size, c.dropout, c.mode) == ("mobilenet_v3_small", 160, 0.2, "finetune")
    assert parse_args(["--out", "x", "--arch", "efficientnet_b0"]).img_size == 224
    with pytest.raises(SystemExit):
        parse_args(["--out", "x", "--img-size", "100"])  # not a multiple of 32


def test_efficientnet_trainable_sets() -> None:
    from build.nets.efficientnet import efficientnet_b0

    m = efficientnet_b0(2)
    set_trainable(m, 1)
    assert {n.split(".")[0] for n, p in m.named_parameters() if p.requires_grad} == {"classifier"}
    set_trainable(m, 2)
    trainable = {".".join(n.split(".")[:2]) for n, p in m.named_parameters() if p.requires_grad}
    assert trainable == {"classifier.1", "features.5", "features.6", "features.7", "features.8"}


def test_init_from_timm_layout_and_errors(tmp_path: Path) -> None:
    from build.nets.efficientnet import efficientnet_b0
    from build.train_classifier import load_init
    from tests.build.test_efficientnet import hand_timm_keys

    torch.manual_seed(0)
    timm_sd = {k: torch.randn(s) if s else torch.tensor(5) for k, s in hand_timm_keys(1000)
               if not k.endswith("num_batches_tracked")}  # some published files omit the counters
    f = tmp_path / "timm_b0.pth"
    torch.save(timm_sd, f)
    m = efficientnet_b0(2)
    load_init(m, f, 2)  # 1000-class head dropped, everything else loaded
    assert torch.equal(m.features[0][0].weight, timm_sd["conv_stem.weight"])
    assert torch.equal(m.features[7][0].block[3][1].running_var, timm_sd["blocks.6.0.bn3.running_var"])
    assert m.classifier[1].weight.shape == (2, 1280)

    wrong = tmp_path / "mnv3.pt"
    torch.save({"arch": "mobilenet_v3_small", "state_dict": mobilenet_v3_small(2).state_dict()}, wrong)
    with pytest.raises(SystemExit, match="a mobilenet_v3_small checkpoint, but --arch is efficientnet_b0"):
        load_init(efficientnet_b0(2), wrong, 2)
    bare = tmp_path / "bare.pt"
    torch.save(mobilenet_v3_small(2).state_dict(), bare)
    with pytest.raises(SystemExit, match="not a state_dict of efficientnet_b0"):
        load_init(efficientnet_b0(2), bare, 2)
    bad_shape = tmp_path / "k3.pt"
    sd3 = efficientnet_b0(3).state_dict()
    sd3["features.8.0.weight"] = torch.zeros(1280, 321, 1, 1)
    torch.save(sd3, bad_shape)
    with pytest.raises(SystemExit, match="shapes do not match efficientnet_b0"):
        load_init(efficientnet_b0(2), bad_shape, 2)


def _run_smoke(data: Path, out: Path, *extra: str, prefix: str = "") -> None:
    torch.set_num_threads(1)
    rc = main([
        "--train-csv", str(data / f"{prefix}train.csv"), "--val-csv", str(data / f"{prefix}val.csv"),
        "--test-csv", str(data / f"{prefix}test.csv"), "--project-root", str(data), "--out", str(out),
        "--batch", "4", "--workers", "0", "--seed", "1337", *extra,
    ])
    assert rc == 0


def test_efficientnet_seed003_preset_two_stages(tmp_path: Path) -> None:
    data = _fixture_copy(tmp_path)
    out = tmp_path / "run"
    _run_smoke(data, out, "--preset", "seed003", "--img-size", "64", "--stage-epochs", "2", "2", "--batch", "4")
    history = json.loads((out / "history.json").read_text())
    assert [h["stage"] for h in history] == [1, 1, 2, 2]
    assert [h["lr"] for h in history] == pytest.approx([1e-3, 1e-3, 1e-4, 1e-4])  # stage 2 at 10x lower LR
    ckpt = torch.load(out / "best.pt", map_location="cpu", weights_only=False)
    assert ckpt["arch"] == "efficientnet_b0" and ckpt["input_size"] == 64 and ckpt["dropout"] == 0.3
    assert ckpt["classes"] == ["anger", "disgust", "happy", "neutral", "surprised"]
    best_loss = min(h["val_loss"] for h in history)
    assert ckpt["val_metrics"]["loss"] == pytest.approx(best_loss)  # --select val_loss
    from build.nets.efficientnet import efficientnet_b0

    efficientnet_b0(5).load_state_dict(ckpt["state_dict"])
    assert json.loads((out / "test_metrics.json").read_text())["n"] == 3


def test_binary_mobilenet_finetune(tmp_path: Path) -> None:
    data = _fixture_copy(tmp_path)
    out = tmp_path / "run"
    _run_smoke(data, out, "--mode", "finetune", "--epochs", "2", "--img-size", "64", "--class-weights", "balanced",
               prefix="binary_")
    assert json.loads((out / "classes.json").read_text()) == ["happy", "other"]
    ckpt = torch.load(out / "best.pt", map_location="cpu", weights_only=False)
    assert (ckpt["arch"], ckpt["num_classes"], ckpt["input_size"]) == ("mobilenet_v3_small", 2, 64)
    m = json.loads((out / "test_metrics.json").read_text())
    assert m["n"] == 3 and len(m["confusion_matrix"]) == 2 and set(m["per_class"]) == {"happy", "other"}
