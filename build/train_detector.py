"""Supervised detector training on WIDER FACE (RetinaFace ``label.txt`` layout) with the multibox loss.

    python -m build.train_detector --labels WIDER/train/label.txt --images WIDER/train/images \
        --variant acwface_dcn --out runs/acwface_dcn --steps 120000 --size 640 --batch 32

No WIDER FACE copy ships with this repository (nothing is downloaded); bring your own. The pieces shared with
the distillation script live here: detection decoding + NMS, checkpoints with resume, the LR schedule.
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from build.losses import multibox_loss
from build.nets.retinaface import RetinaFace, decode_boxes, decode_landmarks, flatten_level, prior_boxes

log = logging.getLogger(__name__)

SEED = 1337


# ------------------------------------------------------------------------------------ decoding + NMS


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou: float) -> torch.Tensor:
    """Greedy NMS (torchvision semantics) in plain torch; returns kept indices by decreasing score."""
    order = scores.argsort(descending=True)
    boxes = boxes[order]
    x1, y1, x2, y2 = boxes.unbind(1)
    areas = (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    keep: list[int] = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        xx1 = torch.maximum(x1[i], x1[i + 1 :])
        yy1 = torch.maximum(y1[i], y1[i + 1 :])
        xx2 = torch.minimum(x2[i], x2[i + 1 :])
        yy2 = torch.minimum(y2[i], y2[i + 1 :])
        inter = (xx2 - xx1).clamp(min=0) * (yy2 - yy1).clamp(min=0)
        ov = inter / (areas[i] + areas[i + 1 :] - inter).clamp(min=1e-12)
        suppressed[i + 1 :] |= ov > iou
    return order[torch.tensor(keep, dtype=torch.long)] if keep else order[:0]


@dataclass(frozen=True)
class Detections:
    boxes: torch.Tensor  # (n, 4) normalised x1, y1, x2, y2
    scores: torch.Tensor  # (n,)
    landmarks: torch.Tensor  # (n, 10) normalised


def decode_detections(  # noqa: PLR0917
    loc: torch.Tensor,
    probs: torch.Tensor,
    landm: torch.Tensor,
    priors: torch.Tensor,
    score_threshold: float = 0.5,
    nms_iou: float = 0.4,
    variances: tuple[float, float] = (0.1, 0.2),
) -> list[Detections]:
    """Per image: face probability >= threshold, decode, NMS (the deployed detector's post-processing)."""
    out: list[Detections] = []
    for b in range(loc.shape[0]):
        scores = probs[b, :, 1]
        sel = scores >= score_threshold
        if not bool(sel.any()):
            out.append(Detections(loc.new_zeros(0, 4), scores[:0], landm.new_zeros(0, landm.shape[-1])))
            continue
        boxes = decode_boxes(loc[b][sel], priors[sel], variances)
        lms = decode_landmarks(landm[b][sel], priors[sel], variances)
        s = scores[sel]
        keep = nms(boxes, s, nms_iou)
        out.append(Detections(boxes[keep], s[keep], lms[keep]))
    return out


def detections_to_targets(d: Detections) -> torch.Tensor:
    """Pseudo ground truth rows (n, 15) for the multibox loss (label 1: landmarks present)."""
    ones = torch.ones(d.boxes.shape[0], 1)
    return torch.cat([d.boxes, d.landmarks, ones], dim=1).detach()


def forward_parts(model: RetinaFace, x: torch.Tensor) -> tuple[list[torch.Tensor], tuple[torch.Tensor, ...]]:
    """(level features, (loc, conf logits, landmarks)) in one pass -- the features feed the hint loss."""
    feats = model.level_features(x)
    nl = 2 * model.cfg.num_landmarks
    loc = torch.cat([flatten_level(model.BboxHead[i](f), 4) for i, f in enumerate(feats)], dim=1)
    conf = torch.cat([flatten_level(model.ClassHead[i](f), 2) for i, f in enumerate(feats)], dim=1)
    ldm = torch.cat([flatten_level(model.LandmarkHead[i](f), nl) for i, f in enumerate(feats)], dim=1)
    return feats, (loc, conf, ldm)


# ------------------------------------------------------------------------------ schedule + checkpoints


def lr_at(step: int, total: int, base: float, warmup: int = 50, floor: float = 0.05) -> float:
    """Linear warm-up then cosine decay to ``floor`` x base at ``total`` steps."""
    if step < warmup:
        return base * (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t)))


def save_checkpoint(path: Path, model: nn.Module, opt: torch.optim.Optimizer, step: int,  # noqa: PLR0917
                    rng: np.random.Generator, extra: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({
        "model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
        "numpy_rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(), **extra,
    }, tmp)
    tmp.replace(path)
    log.info("checkpoint %s (step %d)", path, step)


def load_checkpoint(path: Path, model: nn.Module, opt: torch.optim.Optimizer,
                    rng: np.random.Generator) -> dict[str, Any]:
    ck: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=False)
    model.load_state_dict(ck["model"], strict=True)
    opt.load_state_dict(ck["optimizer"])
    rng.bit_generator.state = ck["numpy_rng"]
    torch.set_rng_state(ck["torch_rng"])
    log.info("resumed %s at step %d", path, ck["step"])
    return ck


# ------------------------------------------------------------------------------------------------ CLI


def main(argv: list[str] | None = None) -> int:
    from tqdm import tqdm

    from build.detector_data import WiderFaceDataset, batches
    from build.nets import acwface

    p = argparse.ArgumentParser(description="Train a RetinaFace/ACWFace variant on WIDER FACE (label.txt layout)")
    p.add_argument("--labels", type=Path, required=True, help="RetinaFace-layout train/label.txt")
    p.add_argument("--images", type=Path, required=True, help="directory the label.txt image paths are relative to")
    p.add_argument("--variant", default="acwface_dcn", help=f"one of {', '.join(acwface.VARIANTS)}")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--size", type=int, default=640)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--steps", type=int, default=120_000)
    p.add_argument("--max-minutes", type=float, default=0.0, help="stop (and checkpoint) after this wall time")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--checkpoint-every", type=int, default=500)
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt if it exists")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    torch.manual_seed(SEED)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(SEED)
    data = WiderFaceDataset(args.labels, args.images, args.size)
    model = acwface.build(args.variant).train()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=5e-4)
    ck_path = args.out / "checkpoint.pt"
    step = 0
    if args.resume and ck_path.exists():
        step = int(load_checkpoint(ck_path, model, opt, rng)["step"])
    priors = prior_boxes(args.size, args.size, model.cfg.anchors)
    start = time.monotonic()
    it = batches(data, args.batch, rng)
    bar = tqdm(total=args.steps, initial=step, desc=f"train {args.variant}")
    while step < args.steps:
        images, targets = next(it)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.steps, args.lr)
        loc, conf, ldm = model(images)
        parts = multibox_loss(loc, conf, ldm, targets, priors)
        opt.zero_grad(set_to_none=True)
        parts.total.backward()
        opt.step()
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{parts.total.item():.3f}", pos=parts.positives)
        timed_out = args.max_minutes > 0 and time.monotonic() - start > 60 * args.max_minutes
        if step % args.checkpoint_every == 0 or step == args.steps or timed_out:
            save_checkpoint(ck_path, model, opt, step, rng, {"variant": args.variant})
        if timed_out:
            log.info("--max-minutes %.1f reached at step %d", args.max_minutes, step)
            break
    bar.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
