"""A faithful torch port of biubug6 Pytorch_Retinaface's post-processing, for golden fixtures only.

Mirrors ``layers/functions/prior_box.py`` (``PriorBox``), ``utils/box_utils.py`` (``decode``, ``decode_landm``)
``utils/nms/py_cpu_nms.py`` (greedy NMS with inclusive +1 pixel areas, drop when IoU > threshold) and the
post-processing loop of ``detect.py`` (score threshold, top-k, NMS, keep-top-k, scale to original pixels).
Written loop-for-loop like the original (Python loops in PriorBox, the while-loop NMS) so it is an independent
check of the vectorised numpy code in ``edge_agent.vision``; the only deliberate differences are documented:
ties in score are broken by anchor index (stable sort) and the final detections are clipped to the frame.
"""

from __future__ import annotations

from itertools import product
from math import ceil

import torch


class PriorBox:
    """biubug6 PriorBox: ``image_size`` is (height, width) of the network input."""

    def __init__(self, min_sizes: list[list[int]], steps: list[int], clip: bool, image_size: tuple[int, int]):
        self.min_sizes = min_sizes
        self.steps = steps
        self.clip = clip
        self.image_size = image_size
        self.feature_maps = [[ceil(image_size[0] / step), ceil(image_size[1] / step)] for step in steps]

    def forward(self) -> torch.Tensor:
        anchors: list[float] = []
        for k, f in enumerate(self.feature_maps):
            for i, j in product(range(f[0]), range(f[1])):
                for min_size in self.min_sizes[k]:
                    s_kx = min_size / self.image_size[1]
                    s_ky = min_size / self.image_size[0]
                    cx = (j + 0.5) * self.steps[k] / self.image_size[1]
                    cy = (i + 0.5) * self.steps[k] / self.image_size[0]
                    anchors += [cx, cy, s_kx, s_ky]
        output = torch.tensor(anchors, dtype=torch.float32).view(-1, 4)
        if self.clip:
            output.clamp_(max=1, min=0)
        return output


def decode(loc: torch.Tensor, priors: torch.Tensor, variances: tuple[float, float]) -> torch.Tensor:
    boxes = torch.cat(
        (
            priors[:, :2] + loc[:, :2] * variances[0] * priors[:, 2:],
            priors[:, 2:] * torch.exp(loc[:, 2:] * variances[1]),
        ),
        1,
    )
    boxes[:, :2] -= boxes[:, 2:] / 2
    boxes[:, 2:] += boxes[:, :2]
    return boxes


def decode_landm(pre: torch.Tensor, priors: torch.Tensor, variances: tuple[float, float]) -> torch.Tensor:
    return torch.cat(
        [priors[:, :2] + pre[:, 2 * k : 2 * k + 2] * variances[0] * priors[:, 2:] for k in range(5)], dim=1
    )


def py_cpu_nms(dets: torch.Tensor, thresh: float) -> list[int]:
    """dets (N,5) x1,y1,x2,y2,score -> kept indices (greedy, inclusive +1 areas)."""
    x1, y1, x2, y2, scores = dets.unbind(1)
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = torch.sort(scores, descending=True, stable=True).indices
    keep: list[int] = []
    while order.numel() > 0:
        i = int(order[0])
        keep.append(i)
        xx1 = torch.maximum(x1[i], x1[order[1:]])
        yy1 = torch.maximum(y1[i], y1[order[1:]])
        xx2 = torch.minimum(x2[i], x2[order[1:]])
        yy2 = torch.minimum(y2[i], y2[order[1:]])
        w = torch.clamp(xx2 - xx1 + 1, min=0.0)
        h = torch.clamp(yy2 - yy1 + 1, min=0.0)
        inter = w * h
        ovr = inter / (areas[i] + areas[order[1:]] - inter)
        inds = torch.nonzero(ovr <= thresh).flatten()
        order = order[inds + 1]
    return keep


def detect_postprocess(
    loc: torch.Tensor,
    conf: torch.Tensor,
    landms: torch.Tensor,
    priors: torch.Tensor,
    variances: tuple[float, float],
    *,
    input_wh: tuple[int, int],
    resize: tuple[float, float],
    frame_wh: tuple[int, int],
    confidence_threshold: float,
    nms_threshold: float,
    top_k: int,
    keep_top_k: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """detect.py's loop: (A,4) loc, (A,2) softmax conf, (A,10) landm -> boxes (N,4), scores (N,), landm (N,10).

    ``resize`` is the per-axis scale network px / frame px (letterbox: equal axes up to rounding).
    """
    w, h = input_wh
    scale = torch.tensor([w / resize[0], h / resize[1]] * 2, dtype=torch.float32)
    scale1 = torch.tensor([w / resize[0], h / resize[1]] * 5, dtype=torch.float32)
    scores = conf[:, 1]
    inds = torch.nonzero(scores > confidence_threshold).flatten()
    order = torch.sort(scores[inds], descending=True, stable=True).indices[:top_k]
    sel = inds[order]
    boxes = decode(loc[sel], priors[sel], variances) * scale
    lm = decode_landm(landms[sel], priors[sel], variances) * scale1
    sc = scores[sel]
    keep = py_cpu_nms(torch.cat([boxes, sc[:, None]], 1), nms_threshold)[:keep_top_k]
    boxes, sc, lm = boxes[keep], sc[keep], lm[keep]
    fw, fh = frame_wh
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, fw)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, fh)
    lm[:, 0::2] = lm[:, 0::2].clamp(0, fw)
    lm[:, 1::2] = lm[:, 1::2].clamp(0, fh)
    return boxes, sc, lm
