"""Face-detector training data: the WIDER FACE ``label.txt`` reader (RetinaFace training layout) and the
augmentation pipeline (random square crop, flip with landmark swap, colour jitter, resize).

``label.txt`` layout (biubug6 / RetinaFace ``train/label.txt``)::

    # 0--Parade/0_Parade_marchingband_1_849.jpg
    449 330 122 149 488.906 373.643 0.0 542.089 376.442 0.0 515.031 412.83 0.0 485.174 425.893 0.0 \
        538.357 431.491 0.0 0.82

(one line in the file)

i.e. ``x y w h`` then five landmarks ``lx ly flag`` (``-1 -1 -1`` when absent) and a blur/score field. The
landmark order is left eye, right eye, nose, left mouth corner, right mouth corner (image left/right).

A :class:`Sample` holds pixel coordinates; :func:`to_targets` turns it into the (n, 15) normalised targets
of :mod:`build.losses`. Images are BGR uint8 (OpenCV), like the deployed preprocessing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import torch

log = logging.getLogger(__name__)

BGR_MEAN = (104.0, 117.0, 123.0)  # RetinaFace preprocessing (std 1), identical to the plain detector's manifest
FLIP_LANDMARKS = (1, 0, 2, 4, 3)  # after a horizontal flip left/right eyes and mouth corners swap
CROP_SCALES = (0.3, 0.45, 0.6, 0.8, 1.0)  # biubug6 _crop


@dataclass(frozen=True)
class Sample:
    image: np.ndarray  # (H, W, 3) uint8 BGR
    boxes: np.ndarray  # (n, 4) float32 x1, y1, x2, y2 pixels
    landmarks: np.ndarray  # (n, 10) float32 pixels (x, y) x 5
    has_landmarks: np.ndarray  # (n,) bool

    @staticmethod
    def empty(image: np.ndarray) -> Sample:
        return Sample(image, np.zeros((0, 4), np.float32), np.zeros((0, 10), np.float32), np.zeros(0, bool))

    def __len__(self) -> int:
        return int(self.boxes.shape[0])


@dataclass(frozen=True)
class LabelledImage:
    path: str  # relative to the images directory
    boxes: np.ndarray
    landmarks: np.ndarray
    has_landmarks: np.ndarray


class LabelFileError(ValueError):
    """A WIDER FACE label.txt line cannot be parsed."""


def parse_label_file(path: Path) -> list[LabelledImage]:
    """Read a RetinaFace-layout ``label.txt`` into per-image boxes/landmarks (pixels)."""
    entries: list[LabelledImage] = []
    current: str | None = None
    rows: list[list[float]] = []

    def flush() -> None:
        if current is None:
            return
        arr = np.asarray(rows, np.float32).reshape(-1, 20) if rows else np.zeros((0, 20), np.float32)
        boxes = np.stack([arr[:, 0], arr[:, 1], arr[:, 0] + arr[:, 2], arr[:, 1] + arr[:, 3]], axis=1)
        lm = arr[:, [4, 5, 7, 8, 10, 11, 13, 14, 16, 17]]
        has = lm[:, 0] >= 0
        keep = (arr[:, 2] > 0) & (arr[:, 3] > 0)
        entries.append(LabelledImage(current, boxes[keep], lm[keep], has[keep]))

    with path.open(encoding="utf-8") as f:
        for lineno, raw in enumerate(f, 1):
            line = raw.strip()
            if not line:
                continue
            if line.startswith("#"):
                flush()
                current, rows = line[1:].strip(), []
                continue
            if current is None:
                raise LabelFileError(f"{path}:{lineno}: box line before the first '# image path' line")
            try:
                vals = [float(v) for v in line.split()]
            except ValueError:
                raise LabelFileError(f"{path}:{lineno}: non-numeric value in {line!r}") from None
            if len(vals) == 4:  # val/test layout: boxes only
                vals += [-1.0] * 15 + [0.0]
            if len(vals) < 19:
                raise LabelFileError(
                    f"{path}:{lineno}: expected 'x y w h' + 5 x 'lx ly flag' (+ score), got {len(vals)} numbers"
                )
            rows.append([*vals, 0.0][:20])
    flush()
    if not entries:
        raise LabelFileError(f"{path}: no '# image path' entries found (is this a RetinaFace label.txt?)")
    return entries


# ----------------------------------------------------------------------------------------- augmentation


def random_square_crop(s: Sample, rng: np.random.Generator, min_face: float = 0.0, tries: int = 250) -> Sample:
    """biubug6 ``_crop``: a square of side scale x short side (scale from CROP_SCALES) that keeps at least one
    face centre; faces whose centre falls outside are dropped, the rest clipped. Falls back to the whole
    image (which keeps every face) when no try succeeds.
    """
    h, w = s.image.shape[:2]
    short = min(h, w)
    for _ in range(tries):
        side = int(float(rng.choice(CROP_SCALES)) * short)
        x0 = int(rng.integers(0, w - side + 1))
        y0 = int(rng.integers(0, h - side + 1))
        if len(s) == 0:
            return _apply_crop(s, x0, y0, side, np.zeros(0, bool))
        cx = (s.boxes[:, 0] + s.boxes[:, 2]) / 2
        cy = (s.boxes[:, 1] + s.boxes[:, 3]) / 2
        inside = (cx > x0) & (cx < x0 + side) & (cy > y0) & (cy < y0 + side)
        if not inside.any():
            continue
        sizes = np.minimum(s.boxes[inside, 2] - s.boxes[inside, 0], s.boxes[inside, 3] - s.boxes[inside, 1])
        if min_face > 0 and (sizes / side * 320 < min_face).all():
            continue
        return _apply_crop(s, x0, y0, side, inside)
    return s


def _apply_crop(s: Sample, x0: int, y0: int, side: int, keep: np.ndarray) -> Sample:
    img = s.image[y0 : y0 + side, x0 : x0 + side]
    boxes = s.boxes[keep].copy()
    boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]] - x0, 0, side)
    boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]] - y0, 0, side)
    lm = s.landmarks[keep].copy()
    lm[:, 0::2] -= x0
    lm[:, 1::2] -= y0
    return Sample(np.ascontiguousarray(img), boxes, lm, s.has_landmarks[keep].copy())


def hflip(s: Sample) -> Sample:
    """Mirror horizontally; landmarks swap left/right so "left eye" stays the image-left eye."""
    w = s.image.shape[1]
    boxes = s.boxes.copy()
    boxes[:, 0], boxes[:, 2] = w - s.boxes[:, 2], w - s.boxes[:, 0]
    pts = s.landmarks.reshape(-1, 5, 2).copy()
    pts[:, :, 0] = w - pts[:, :, 0]
    pts = pts[:, list(FLIP_LANDMARKS)]
    return Sample(np.ascontiguousarray(s.image[:, ::-1]), boxes, pts.reshape(-1, 10), s.has_landmarks.copy())


def colour_jitter(image: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """Brightness, contrast, saturation, hue jitter (biubug6 ``_distort`` ranges x strength), random order."""
    img = image.astype(np.float32)
    ops = list(rng.permutation(4))
    for op in ops:
        if rng.random() < 0.5:
            continue
        if op == 0:
            img += rng.uniform(-32, 32) * strength
        elif op == 1:
            img *= 1.0 + rng.uniform(-0.5, 0.5) * strength
        else:
            hsv = cv2.cvtColor(np.clip(img, 0, 255).astype(np.uint8), cv2.COLOR_BGR2HSV).astype(np.float32)
            if op == 2:
                hsv[:, :, 1] *= 1.0 + rng.uniform(-0.5, 0.5) * strength
            else:
                hsv[:, :, 0] = (hsv[:, :, 0] + rng.uniform(-18, 18) * strength) % 180
            img = cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2BGR).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def strong_photometric(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Colour jitter plus occasional grayscale, blur and sensor noise (for distillation students)."""
    img = colour_jitter(image, rng, strength=1.25)
    if rng.random() < 0.15:
        g = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        img = cv2.cvtColor(g, cv2.COLOR_GRAY2BGR)
    if rng.random() < 0.2:
        k = int(rng.choice([3, 5]))
        img = cv2.GaussianBlur(img, (k, k), 0)
    if rng.random() < 0.2:
        noise = rng.normal(0, rng.uniform(2, 10), img.shape)
        img = np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    return img


_INTERPOLATIONS = (cv2.INTER_LINEAR, cv2.INTER_CUBIC, cv2.INTER_AREA, cv2.INTER_NEAREST, cv2.INTER_LANCZOS4)


def resize_square(s: Sample, size: int, rng: np.random.Generator | None = None) -> Sample:
    """Resize a (square) sample to size x size, scaling boxes and landmarks; a random interpolation
    (biubug6) when ``rng`` is given, bilinear otherwise."""
    h, w = s.image.shape[:2]
    interp = _INTERPOLATIONS[int(rng.integers(len(_INTERPOLATIONS)))] if rng is not None else cv2.INTER_LINEAR
    img = cv2.resize(s.image, (size, size), interpolation=interp)
    sx, sy = size / w, size / h
    boxes = s.boxes * np.array([sx, sy, sx, sy], np.float32)
    lm = s.landmarks * np.tile(np.array([sx, sy], np.float32), 5)
    return Sample(img, boxes, lm, s.has_landmarks)


def pad_to_square(s: Sample) -> Sample:
    """Pad the right/bottom with the mean colour so the image is square (biubug6 ``_pad_to_square``)."""
    h, w = s.image.shape[:2]
    side = max(h, w)
    if h == w:
        return s
    img = np.empty((side, side, 3), np.uint8)
    img[:] = np.array(BGR_MEAN, np.uint8)
    img[:h, :w] = s.image
    return replace(s, image=img)


def train_augment(s: Sample, size: int, rng: np.random.Generator, min_face_px: float = 0.0) -> Sample:
    """WIDER FACE training augmentation: crop -> colour -> pad -> flip (p=0.5) -> resize; drops faces
    smaller than ``min_face_px`` after the resize (biubug6 drops < 16 px at 640 before the resize)."""
    s = random_square_crop(s, rng)
    s = replace(s, image=colour_jitter(s.image, rng))
    s = pad_to_square(s)
    if rng.random() < 0.5:
        s = hflip(s)
    s = resize_square(s, size, rng)
    if min_face_px > 0 and len(s):
        wh = np.minimum(s.boxes[:, 2] - s.boxes[:, 0], s.boxes[:, 3] - s.boxes[:, 1])
        keep = wh >= min_face_px
        s = Sample(s.image, s.boxes[keep], s.landmarks[keep], s.has_landmarks[keep])
    return s


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """BGR uint8 (H, W, 3) -> float32 (3, H, W) minus the RetinaFace mean (std 1)."""
    arr = image.astype(np.float32) - np.array(BGR_MEAN, np.float32)
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def to_targets(s: Sample) -> torch.Tensor:
    """(n, 15) normalised targets for :func:`build.losses.multibox_loss`."""
    h, w = s.image.shape[:2]
    if len(s) == 0:
        return torch.zeros((0, 15), dtype=torch.float32)
    scale = np.array([w, h], np.float32)
    boxes = s.boxes / np.tile(scale, 2)
    lm = s.landmarks / np.tile(scale, 5)
    lm = np.where(s.has_landmarks[:, None], lm, -1.0)
    label = np.where(s.has_landmarks, 1.0, -1.0)[:, None]
    return torch.from_numpy(np.concatenate([boxes, lm, label], axis=1).astype(np.float32))


class WiderFaceDataset:
    """Indexable WIDER FACE training set (``label.txt`` + images directory) with :func:`train_augment`."""

    def __init__(self, labels: Path, images: Path, size: int = 640) -> None:
        self.entries = parse_label_file(labels)
        self.images, self.size = images, size
        missing = [e.path for e in self.entries[:20] if not (images / e.path).is_file()]
        if missing:
            raise FileNotFoundError(
                f"{images}: images named in {labels} are missing (first: {missing[0]}); pass the WIDER_train/images "
                "directory the label file's paths are relative to"
            )

    def __len__(self) -> int:
        return len(self.entries)

    def load(self, i: int) -> Sample:
        e = self.entries[i]
        img = cv2.imread(str(self.images / e.path), cv2.IMREAD_COLOR)
        if img is None:
            raise OSError(f"cannot read image {self.images / e.path}")
        return Sample(img, e.boxes, e.landmarks, e.has_landmarks)

    def sample(self, i: int, rng: np.random.Generator) -> Sample:
        return train_augment(self.load(i), self.size, rng)


def batches(
    dataset: WiderFaceDataset, batch_size: int, rng: np.random.Generator
) -> Iterator[tuple[torch.Tensor, list[torch.Tensor]]]:
    """Endless shuffled batches of (images (B, 3, S, S), targets list)."""
    while True:
        order = rng.permutation(len(dataset))
        for start in range(0, len(order) - batch_size + 1, batch_size):
            samples = [dataset.sample(int(i), rng) for i in order[start : start + batch_size]]
            yield collate(samples)


def collate(samples: Sequence[Sample]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    return torch.stack([to_tensor(s.image) for s in samples]), [to_targets(s) for s in samples]
