"""RetinaFace multibox loss (biubug6 ``MultiBoxLoss``): IoU anchor matching, hard-negative-mined
classification, smooth-L1 box and landmark regression, plus the distillation terms.

Targets per image: a float tensor (n, 15) = x1, y1, x2, y2 (normalised to the input), 10 landmark
coordinates (normalised), label (1 = face with landmarks, -1 = face without landmarks). Boxes take part in
the box/class losses either way; only label 1 rows take part in the landmark loss (as in biubug6).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

TARGET_COLUMNS = 15


def point_form(priors: torch.Tensor) -> torch.Tensor:
    """(cx, cy, w, h) -> (x1, y1, x2, y2)."""
    return torch.cat([priors[:, :2] - priors[:, 2:] / 2, priors[:, :2] + priors[:, 2:] / 2], dim=1)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(A, 4) x (B, 4) corner boxes -> (A, B) IoU."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=2)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(dim=1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(dim=1)
    return inter / (area_a[:, None] + area_b[None, :] - inter).clamp(min=1e-12)


def encode_boxes(matched: torch.Tensor, priors: torch.Tensor, variances: tuple[float, float]) -> torch.Tensor:
    """Corner boxes matched to each prior -> regression targets (inverse of decode_boxes)."""
    centre = ((matched[:, :2] + matched[:, 2:]) / 2 - priors[:, :2]) / (variances[0] * priors[:, 2:])
    size = ((matched[:, 2:] - matched[:, :2]).clamp(min=1e-6) / priors[:, 2:]).log() / variances[1]
    return torch.cat([centre, size], dim=1)


def encode_landmarks(matched: torch.Tensor, priors: torch.Tensor, variances: tuple[float, float]) -> torch.Tensor:
    pts = matched.reshape(matched.shape[0], -1, 2)
    out = (pts - priors[:, None, :2]) / (variances[0] * priors[:, None, 2:])
    return out.reshape(matched.shape[0], -1)


def match(
    targets: torch.Tensor,
    priors: torch.Tensor,
    variances: tuple[float, float],
    threshold: float = 0.35,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """biubug6 ``match``: every prior takes its best-IoU truth; priors below ``threshold`` are background;
    each truth keeps its best prior (if that IoU >= 0.2) even below the threshold.

    Returns loc targets (A, 4), labels (A,) in {0 background, 1 face, -1 face without landmarks},
    landmark targets (A, 10).
    """
    a = priors.shape[0]
    if targets.numel() == 0:
        return priors.new_zeros(a, 4), priors.new_zeros(a, dtype=torch.long), priors.new_zeros(a, 10)
    truths, landms, labels = targets[:, :4], targets[:, 4:14], targets[:, 14]
    overlaps = box_iou(truths, point_form(priors))  # (T, A)
    best_prior_overlap, best_prior_idx = overlaps.max(dim=1)  # per truth
    valid = best_prior_overlap >= 0.2
    best_truth_overlap, best_truth_idx = overlaps.max(dim=0)  # per prior
    forced = best_prior_idx[valid]
    best_truth_overlap[forced] = 2.0
    best_truth_idx[forced] = torch.arange(truths.shape[0], device=targets.device)[valid]
    conf = labels[best_truth_idx].long()
    conf[best_truth_overlap < threshold] = 0
    loc = encode_boxes(truths[best_truth_idx], priors, variances)
    landm = encode_landmarks(landms[best_truth_idx], priors, variances)
    return loc, conf, landm


@dataclass(frozen=True)
class LossParts:
    loc: torch.Tensor
    cls: torch.Tensor
    landm: torch.Tensor
    positives: int

    @property
    def total(self) -> torch.Tensor:
        """biubug6 weighting: 2 * loc + cls + landm."""
        return 2.0 * self.loc + self.cls + self.landm


def multibox_loss(
    loc_p: torch.Tensor,
    conf_p: torch.Tensor,
    landm_p: torch.Tensor,
    targets: list[torch.Tensor],
    priors: torch.Tensor,
    *,
    variances: tuple[float, float] = (0.1, 0.2),
    threshold: float = 0.35,
    neg_pos_ratio: int = 7,
) -> LossParts:
    """Multibox loss over a batch. ``conf_p`` are logits (N, A, 2); targets one (n_i, 15) tensor per image.

    Images without faces still contribute hard negatives (``neg_pos_ratio`` x max(positives, 1)).
    """
    matched = [match(t.to(priors.device), priors, variances, threshold) for t in targets]
    loc_t = torch.stack([m[0] for m in matched])
    conf_t = torch.stack([m[1] for m in matched])
    landm_t = torch.stack([m[2] for m in matched])

    pos_landm = conf_t > 0
    n_landm = max(int(pos_landm.sum()), 1)
    loss_landm = F.smooth_l1_loss(landm_p[pos_landm], landm_t[pos_landm], reduction="sum") / n_landm

    pos = conf_t != 0
    n_pos = int(pos.sum())
    loss_loc = F.smooth_l1_loss(loc_p[pos], loc_t[pos], reduction="sum") / max(n_pos, 1)

    # Hard negative mining on the per-anchor background loss.
    with torch.no_grad():
        bg_loss = torch.logsumexp(conf_p, dim=2) - conf_p[..., 0]
        bg_loss[pos] = 0.0
        order = bg_loss.argsort(dim=1, descending=True)
        rank = order.argsort(dim=1)
        n_neg = (neg_pos_ratio * pos.sum(dim=1, keepdim=True).clamp(min=1)).clamp(max=conf_p.shape[1] - 1)
        neg = rank < n_neg
    sel = pos | neg
    cls_t = pos.long()
    loss_cls = F.cross_entropy(conf_p[sel], cls_t[sel], reduction="sum") / max(n_pos, 1)
    return LossParts(loss_loc, loss_cls, loss_landm, n_pos)


def soft_kd_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Per-anchor KL(teacher || student) on face/background probabilities, mean over anchors and images."""
    log_p = F.log_softmax(student_logits / temperature, dim=-1)
    t = teacher_probs.clamp(min=1e-8)
    kl = (t * (t.log() - log_p)).sum(dim=-1)
    return kl.mean() * temperature**2


def feature_hint_loss(student: list[torch.Tensor], teacher: list[torch.Tensor]) -> torch.Tensor:
    """Mean squared error between the per-level feature maps the heads see (same shapes)."""
    return torch.stack([F.mse_loss(s, t) for s, t in zip(student, teacher, strict=True)]).mean()
