"""Train / evaluate the MobileNetV3-Small expression classifier on CSV splits or class folders (seed 001).

    python -m build.train_classifier --mode finetune --epochs 30 --batch 256 --workers 4 \\
        --lr-backbone 1e-4 --lr-head 5e-4 --train-csv data/train.csv --val-csv data/val.csv \\
        --test-csv data/test.csv --project-root . --out runs/finetune --verbose

Outputs in ``--out``: ``best.pt``, ``val_metrics_best.json``, ``test_metrics.json`` (top1, macro_f1, per-class
precision/recall/f1, confusion matrix), ``test_preds.csv`` (``path,true,pred``), ``classes.json``, ``history.json``.

There are NO ImageNet MobileNetV3 weights in this project (nothing is downloaded from a hub): without
``--init`` the network starts from torchvision's random initialisation, so ``--mode probe`` on a fresh network
only trains a head over random features. Use ``--init`` with a checkpoint of this trainer (``best.pt``), of
``build.distill_classifier``, or a torchvision ``mobilenet_v3_small`` state_dict you have yourself.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, WeightedRandomSampler
from tqdm import tqdm

from build.classifier_data import (
    INPUT_SIZE,
    AugmentConfig,
    ImageDataset,
    Sample,
    check_labels,
    read_csv_split,
    read_folder_split,
    resolve_classes,
)
from build.nets.mobilenetv3 import MobileNetV3Small, mobilenet_v3_small

log = logging.getLogger(__name__)

ARCH = "mobilenet_v3_small"


# ----------------------------------------------------------------------------------------- pure helpers
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def class_weights(counts: Sequence[int], kind: str, beta: float = 0.999) -> list[float]:
    """Per-class loss weights: ``none`` (1), ``balanced`` (n / (K * n_c)), ``effective`` (Cui et al. 2019,
    (1 - beta) / (1 - beta^n_c)), the last two normalised to mean 1. A class with no samples gets weight 0."""
    k = len(counts)
    if kind == "none":
        return [1.0] * k
    if kind == "balanced":
        raw = [(sum(counts) / (k * c)) if c else 0.0 for c in counts]
    elif kind == "effective":
        raw = [((1 - beta) / (1 - beta**c)) if c else 0.0 for c in counts]
    else:
        raise ValueError(f"unknown class-weight kind {kind!r}: use none, balanced or effective")
    present = [w for w in raw if w > 0]
    mean = sum(present) / len(present)
    return [w / mean for w in raw]


def soft_target_loss(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None,
                     gamma: float = 0.0) -> torch.Tensor:
    """Cross-entropy (gamma=0) or focal loss (gamma>0) against soft targets (one-hot, smoothed or MixUp-ed).

    ``loss_i = -sum_c w_c * t_ic * (1 - p_ic)^gamma * log p_ic``, averaged over the batch.
    """
    logp = F.log_softmax(logits.float(), dim=1)
    term = target * logp
    if gamma > 0:
        term = term * (1 - logp.exp()).pow(gamma)
    if weights is not None:
        term = term * weights[None, :]
    return -term.sum(dim=1).mean()


def mixup(x: torch.Tensor, y: torch.Tensor, alpha: float, rng: np.random.Generator,
          gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """MixUp (Zhang et al. 2018): lambda ~ Beta(alpha, alpha) from ``rng``, partner order from ``gen``;
    ``y`` are soft targets and are mixed with the same lambda."""
    if alpha <= 0 or x.shape[0] < 2:
        return x, y
    lam = float(rng.beta(alpha, alpha))
    perm = torch.randperm(x.shape[0], generator=gen).to(x.device)
    return lam * x + (1 - lam) * x[perm], lam * y + (1 - lam) * y[perm]


def warmup_cosine(step: int, total: int, warmup: int, floor: float = 0.01) -> float:
    """LR multiplier: linear warmup over ``warmup`` steps, then cosine from 1 to ``floor``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def classification_metrics(true: Sequence[int], pred: Sequence[int], classes: Sequence[str]) -> dict[str, Any]:
    """top1, macro_f1 (over classes present in true or pred), per-class precision/recall/f1/support, confusion
    matrix (rows = true, columns = predicted, in ``classes`` order)."""
    k = len(classes)
    cm = np.zeros((k, k), np.int64)
    for t, p in zip(true, pred, strict=True):
        cm[t, p] += 1
    per: dict[str, dict[str, float | int]] = {}
    f1s: list[float] = []
    for i, c in enumerate(classes):
        tp = int(cm[i, i])
        support, predicted = int(cm[i].sum()), int(cm[:, i].sum())
        prec = tp / predicted if predicted else 0.0
        rec = tp / support if support else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        per[c] = {"precision": prec, "recall": rec, "f1": f1, "support": support}
        if support or predicted:
            f1s.append(f1)
    n = int(cm.sum())
    return {
        "n": n,
        "top1": float(np.trace(cm) / n) if n else 0.0,
        "macro_f1": float(np.mean(f1s)) if f1s else 0.0,
        "per_class": per,
        "confusion_matrix": cm.tolist(),
        "classes": list(classes),
    }


# ----------------------------------------------------------------------------------------- stages
def head_modules(model: MobileNetV3Small) -> list[nn.Module]:
    return [model.classifier]


def last_blocks(model: MobileNetV3Small) -> list[nn.Module]:
    """"Last 2 blocks": the last two bnecks (features.10, .11) and the 1x1 head conv (features.12)."""
    return [model.features[10], model.features[11], model.features[12]]


def set_trainable(model: MobileNetV3Small, stage: int) -> None:
    """Stage 1: head only; stage 2: last 2 blocks + head; stage 3: everything."""
    for p in model.parameters():
        p.requires_grad = stage >= 3
    groups = head_modules(model) + (last_blocks(model) if stage == 2 else [])
    for m in groups:
        for p in m.parameters():
            p.requires_grad = True


def freeze_bn_of_frozen(model: nn.Module) -> None:
    """Keep BatchNorm running statistics fixed in modules whose weights are frozen."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d) and not m.weight.requires_grad:
            m.eval()


def stage_schedule(mode: str, epochs: int) -> list[int]:
    """Stage per epoch. probe: all 1. finetune: ~20% head, ~30% last blocks + head, rest everything."""
    if mode == "probe":
        return [1] * epochs
    s1 = max(1, round(0.2 * epochs))
    s2 = max(1, round(0.3 * epochs)) if epochs - s1 > 1 else 0
    return ([1] * s1 + [2] * s2 + [3] * epochs)[:epochs]


# ----------------------------------------------------------------------------------------- run
@dataclass
class Splits:
    train: list[Sample]
    val: list[Sample]
    test: list[Sample]


def load_splits(a: argparse.Namespace) -> Splits:
    root = Path(a.project_root)

    def one(csv_arg: str | None, dir_arg: str | None, name: str) -> list[Sample]:
        if csv_arg and dir_arg:
            raise SystemExit(f"give either --{name}-csv or --{name}-dir, not both")
        if csv_arg:
            return read_csv_split(Path(csv_arg), root)
        if dir_arg:
            return read_folder_split(Path(dir_arg))
        raise SystemExit(f"missing --{name}-csv (or --{name}-dir)")

    return Splits(one(a.train_csv, a.train_dir, "train"), one(a.val_csv, a.val_dir, "val"),
                  one(a.test_csv, a.test_dir, "test"))


def parse_classes(arg: str | None) -> list[str] | None:
    if not arg:
        return None
    p = Path(arg)
    if p.suffix == ".json" and p.is_file():
        loaded = json.loads(p.read_text(encoding="utf-8"))
        return [str(c) for c in loaded]
    return [c.strip() for c in arg.split(",") if c.strip()]


def load_init(model: MobileNetV3Small, path: Path, num_classes: int) -> None:
    """Load a checkpoint (ours: {'state_dict': ...} or a bare torchvision-layout state_dict). A head of a
    different K is dropped and re-initialised; everything else must match exactly."""
    raw = torch.load(path, map_location="cpu", weights_only=True)
    sd: dict[str, torch.Tensor] = raw["state_dict"] if isinstance(raw, dict) and "state_dict" in raw else raw
    head_w = sd.get("classifier.3.weight")
    if head_w is not None and head_w.shape[0] != num_classes:
        log.warning("--init %s has a %d-class head; re-initialising it for %d classes",
                    path, head_w.shape[0], num_classes)
        sd = {k: v for k, v in sd.items() if not k.startswith("classifier.3.")}
        missing, unexpected = model.load_state_dict(sd, strict=False)
        if set(missing) != {"classifier.3.weight", "classifier.3.bias"} or unexpected:
            raise SystemExit(f"--init {path}: not a mobilenet_v3_small state_dict "
                             f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
    else:
        model.load_state_dict(sd, strict=True)
    log.info("initialised from %s", path)


@torch.no_grad()
def predict(model: nn.Module, loader: DataLoader[Any], device: torch.device, desc: str,
            verbose: bool) -> tuple[list[int], list[int]]:
    model.eval()
    trues: list[int] = []
    preds: list[int] = []
    for x, y in tqdm(loader, desc=desc, leave=False, disable=not verbose):
        logits = model(x.to(device))
        preds += logits.argmax(1).cpu().tolist()
        trues += y.tolist()
    return trues, preds


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m build.train_classifier",
        description="Train MobileNetV3-Small (160x160 RGB, ImageNet mean/std) on CSV splits or class folders. "
                    "NOTE: no ImageNet MobileNetV3 weights exist in this project; without --init training starts "
                    "from random initialisation (probe mode then trains a head over random features).",
    )
    for split in ("train", "val", "test"):
        ap.add_argument(f"--{split}-csv", help=f"{split} CSV: path + label_en|orig_kor|label")
        ap.add_argument(f"--{split}-dir", help=f"{split} folder: <dir>/<class>/<image>")
    ap.add_argument("--project-root", default=".", help="CSV paths are relative to this directory")
    ap.add_argument("--out", required=True, help="run directory (created)")
    ap.add_argument("--mode", choices=["probe", "finetune"], default="finetune",
                    help="probe: backbone frozen, head only; finetune: head -> last 2 blocks + head -> all")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--lr-head", type=float, default=5e-4)
    ap.add_argument("--lr-backbone", type=float, default=1e-4)
    ap.add_argument("--weight-decay", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--classes", help="label order: comma list or a classes.json (default: sorted unique labels)")
    ap.add_argument("--init", help="checkpoint to start from (best.pt or a mobilenet_v3_small state_dict)")
    ap.add_argument("--class-weights", choices=["none", "balanced", "effective"], default="none")
    ap.add_argument("--oversample", action="store_true", help="sample classes uniformly (WeightedRandomSampler)")
    ap.add_argument("--focal-gamma", type=float, default=0.0, help=">0: focal loss with this gamma")
    ap.add_argument("--label-smoothing", type=float, default=0.0)
    ap.add_argument("--mixup", type=float, default=0.0, help="MixUp Beta(alpha, alpha); 0 disables")
    ap.add_argument("--warmup-epochs", type=float, default=1.0)
    ap.add_argument("--patience", type=int, default=0, help="early stopping on val macro-F1; 0 disables")
    ap.add_argument("--no-augment", action="store_true", help="disable crop/flip/rotation/colour/blur augmentation")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    ap.add_argument("--verbose", action="store_true", help="progress bars and per-epoch logs")
    return ap


def run(a: argparse.Namespace) -> dict[str, Any]:
    seed_everything(a.seed)
    if a.threads:
        torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    splits = load_splits(a)
    classes = resolve_classes(splits.train, parse_classes(a.classes))
    check_labels(splits.val, classes, "val")
    check_labels(splits.test, classes, "test")
    write_json(out / "classes.json", classes)
    k = len(classes)
    device = torch.device(a.device)
    use_amp = device.type == "cuda"

    aug = None if a.no_augment else AugmentConfig()
    train_ds = ImageDataset(splits.train, classes, aug, a.seed)
    val_ds = ImageDataset(splits.val, classes)
    test_ds = ImageDataset(splits.test, classes)
    counts = [Counter(train_ds.targets())[i] for i in range(k)]
    log.info("classes %s; train counts %s; val %d; test %d", classes, counts, len(val_ds), len(test_ds))

    gen = torch.Generator().manual_seed(a.seed)
    mix_rng = np.random.default_rng(a.seed)
    sampler = None
    if a.oversample:
        sample_w = [1.0 / counts[t] for t in train_ds.targets()]
        sampler = WeightedRandomSampler(sample_w, num_samples=len(train_ds), replacement=True, generator=gen)
    loader_kw: dict[str, Any] = {"batch_size": a.batch, "num_workers": a.workers, "pin_memory": use_amp,
                                 "persistent_workers": a.workers > 0}
    train_dl = DataLoader(train_ds, shuffle=sampler is None, sampler=sampler, generator=gen, drop_last=False,
                          **loader_kw)
    val_dl = DataLoader(val_ds, shuffle=False, **loader_kw)
    test_dl = DataLoader(test_ds, shuffle=False, **loader_kw)

    model = mobilenet_v3_small(k)
    if a.init:
        load_init(model, Path(a.init), k)
    model.to(device)
    weights = torch.tensor(class_weights(counts, a.class_weights), dtype=torch.float32, device=device)
    head_ids = {id(p) for m in head_modules(model) for p in m.parameters()}
    opt = torch.optim.AdamW([
        {"params": [p for p in model.parameters() if id(p) in head_ids], "lr": a.lr_head},
        {"params": [p for p in model.parameters() if id(p) not in head_ids], "lr": a.lr_backbone},
    ], weight_decay=a.weight_decay)
    steps_per_epoch = max(1, len(train_dl))
    total = steps_per_epoch * a.epochs
    warm = int(a.warmup_epochs * steps_per_epoch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, total, warm))
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    stages = stage_schedule(a.mode, a.epochs)

    best: dict[str, Any] | None = None
    history: list[dict[str, Any]] = []
    bad_epochs = 0
    t0 = time.time()
    for epoch, stage in enumerate(stages, start=1):
        set_trainable(model, stage)
        model.train()
        freeze_bn_of_frozen(model)
        train_ds.epoch = epoch
        running, seen = 0.0, 0
        bar = tqdm(train_dl, desc=f"epoch {epoch}/{a.epochs} stage {stage}", leave=False, disable=not a.verbose)
        for xb, yb in bar:
            x, y = xb.to(device), yb.to(device)
            target = F.one_hot(y, k).float()
            if a.label_smoothing > 0:
                target = target * (1 - a.label_smoothing) + a.label_smoothing / k
            x, target = mixup(x, target, a.mixup, mix_rng, gen)
            with torch.autocast(device.type, enabled=use_amp):
                logits = model(x)
            loss = soft_target_loss(logits, target, weights, a.focal_gamma)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()  # type: ignore[no-untyped-call]
            scaler.step(opt)
            scaler.update()
            sched.step()
            running += loss.item() * x.shape[0]
            seen += x.shape[0]
            bar.set_postfix(loss=f"{running / seen:.4f}")
        vt, vp = predict(model, val_dl, device, "val", a.verbose)
        vm = classification_metrics(vt, vp, classes)
        row = {"epoch": epoch, "stage": stage, "train_loss": running / max(1, seen), "val_top1": vm["top1"],
               "val_macro_f1": vm["macro_f1"], "seconds": round(time.time() - t0, 1)}
        history.append(row)
        if a.verbose:
            log.info("epoch %d stage %d loss %.4f val top1 %.4f macro-F1 %.4f", epoch, stage, row["train_loss"],
                     vm["top1"], vm["macro_f1"])
        if best is None or vm["macro_f1"] > best["macro_f1"]:
            best = {**vm, "epoch": epoch, "stage": stage}
            bad_epochs = 0
            torch.save({"arch": ARCH, "num_classes": k, "classes": classes, "input_size": INPUT_SIZE,
                        "state_dict": model.state_dict(), "epoch": epoch, "val_metrics": best,
                        "args": vars(a)}, out / "best.pt")
            write_json(out / "val_metrics_best.json", best)
        else:
            bad_epochs += 1
            if a.patience and bad_epochs >= a.patience:
                log.info("early stop at epoch %d: val macro-F1 has not improved for %d epochs", epoch, bad_epochs)
                break
    write_json(out / "history.json", history)

    ckpt = torch.load(out / "best.pt", map_location=device, weights_only=False)
    model.load_state_dict(ckpt["state_dict"])
    tt, tp = predict(model, test_dl, device, "test", a.verbose)
    tm = {**classification_metrics(tt, tp, classes), "best_epoch": ckpt["epoch"]}
    write_json(out / "test_metrics.json", tm)
    with (out / "test_preds.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "true", "pred"])
        for s, t, p in zip(test_ds.samples, tt, tp, strict=True):
            writer.writerow([s.display_path, classes[t], classes[p]])
    log.info("best epoch %d: val macro-F1 %.4f; test top1 %.4f macro-F1 %.4f (%s)", ckpt["epoch"],
             ckpt["val_metrics"]["macro_f1"], tm["top1"], tm["macro_f1"], out)
    return tm


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if a.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run(a)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
