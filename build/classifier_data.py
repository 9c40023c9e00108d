"""Classifier data: CSV / class-folder splits, image loading, the daemon's pre-processing, augmentation.

Pre-processing is the daemon's own code (``edge_agent.vision.preprocess.stretch`` + ``to_tensor``) driven by
the same ``Preprocess`` record the exported manifest carries: BGR uint8 -> stretch to S x S (INTER_AREA
down / INTER_LINEAR up) -> RGB, x/255, ImageNet mean/std, NCHW float32; S is the architecture's input size
(160 for MobileNetV3-Small, 224 for EfficientNet-B0, or ``--img-size``). Training and serving therefore agree
bit for bit on the input transform.

CSV schema (seed 001): ``path`` plus one of ``label_en`` / ``orig_kor`` / ``label`` (first present wins, in that
order); optional ``minX,minY,maxX,maxY`` are read but not used for training. ``path`` is relative to
``--project-root``. Folder layout: ``<dir>/<class name>/<image>``.
"""

from __future__ import annotations

import csv
import functools
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import torch
from torch.utils.data import Dataset

from edge_agent.manifest import Preprocess
from edge_agent.vision.preprocess import stretch, to_tensor

log = logging.getLogger(__name__)

INPUT_SIZE = 160  # MobileNetV3-Small's default; every function here takes the size as a parameter
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LABEL_COLUMNS = ("label_en", "orig_kor", "label")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}

UInt8Image = npt.NDArray[np.uint8]



@functools.lru_cache(maxsize=8)
def preprocess_for(size: int) -> Preprocess:
    """The manifest's pre-processing record for a square S x S classifier input."""
    return Preprocess(
        input_size=(size, size), resize="stretch", color_order="RGB", layout="NCHW",
        dtype="float32", scale=1.0 / 255.0, mean=IMAGENET_MEAN, std=IMAGENET_STD,
    )


PREPROCESS = preprocess_for(INPUT_SIZE)


@dataclass(frozen=True)
class Sample:
    path: Path
    label: str
    display_path: str  # as written in the CSV (what test_preds.csv reports)


class DataError(ValueError):
    """A split file is unusable (missing column, no rows, unknown label)."""


def read_csv_split(csv_path: Path, project_root: Path) -> list[Sample]:
    """Rows of a seed-001 CSV; ``path`` is resolved against ``project_root`` unless absolute."""
    with csv_path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        cols = reader.fieldnames or []
        if "path" not in cols:
            raise DataError(f"{csv_path}: needs a 'path' column, has {cols}")
        label_col = next((c for c in LABEL_COLUMNS if c in cols), None)
        if label_col is None:
            raise DataError(f"{csv_path}: needs one of the label columns {list(LABEL_COLUMNS)}, has {cols}")
        out: list[Sample] = []
        for i, row in enumerate(reader, start=2):
            p, lab = (row.get("path") or "").strip(), (row.get(label_col) or "").strip()
            if not p or not lab:
                raise DataError(f"{csv_path}:{i}: empty path or {label_col}")
            path = Path(p)
            out.append(Sample(path if path.is_absolute() else project_root / path, lab, p))
    if not out:
        raise DataError(f"{csv_path}: no rows")
    log.info("%s: %d rows, labels from column %r", csv_path, len(out), label_col)
    return out


def read_folder_split(root: Path) -> list[Sample]:
    """``root/<class>/<image>`` -> samples (classes are the sub-directory names)."""
    if not root.is_dir():
        raise DataError(f"{root}: not a directory (expected <dir>/<class>/<image> layout)")
    out = [
        Sample(img, cls_dir.name, str(img))
        for cls_dir in sorted(p for p in root.iterdir() if p.is_dir())
        for img in sorted(cls_dir.iterdir())
        if img.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not out:
        raise DataError(f"{root}: no images found in class sub-directories")
    return out


def resolve_classes(train: Sequence[Sample], given: Sequence[str] | None = None) -> list[str]:
    """Label order: ``given`` if set (must cover every training label), else sorted unique labels."""
    seen = sorted({s.label for s in train})
    if given is None:
        return seen
    missing = sorted(set(seen) - set(given))
    if missing:
        raise DataError(f"--classes lacks labels present in the training split: {missing}")
    if len(set(given)) != len(given):
        raise DataError(f"--classes has duplicates: {list(given)}")
    return list(given)


def check_labels(samples: Sequence[Sample], classes: Sequence[str], split: str) -> None:
    unknown = sorted({s.label for s in samples} - set(classes))
    if unknown:
        raise DataError(f"{split} split has labels not in the class list {list(classes)}: {unknown}")


_warned: set[str] = set()


def load_image_bgr(path: Path) -> UInt8Image:
    """Read an image; a missing or undecodable file becomes a black patch with one warning per file."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR) if path.is_file() else None
    if img is None or img.size == 0:
        key = str(path)
        if key not in _warned:
            _warned.add(key)
            log.warning("cannot read image %s (missing or corrupt): using a black %dx%d patch",
                        path, INPUT_SIZE, INPUT_SIZE)
        return np.zeros((INPUT_SIZE, INPUT_SIZE, 3), np.uint8)
    return img  # type: ignore[return-value]


def to_input(img_bgr: UInt8Image, size: int = INPUT_SIZE) -> npt.NDArray[np.float32]:
    """BGR uint8 HxWx3 -> (3, size, size) float32 exactly as the daemon prepares a face crop."""
    resized, _ = stretch(img_bgr, (size, size))
    t = to_tensor(np.ascontiguousarray(resized), preprocess_for(size))
    return np.asarray(t[0], dtype=np.float32)


@dataclass(frozen=True)
class AugmentConfig:
    """Strong face-crop augmentation (all in raw-pixel space, before the daemon's pre-processing)."""

    crop_scale: tuple[float, float] = (0.6, 1.0)  # area fraction of the random crop
    crop_ratio: tuple[float, float] = (0.85, 1.18)
    hflip: float = 0.5
    rotate_deg: float = 12.0
    brightness: float = 0.3
    contrast: float = 0.3
    saturation: float = 0.3
    gray: float = 0.1
    blur: float = 0.2


def augment(img: UInt8Image, rng: np.random.Generator, cfg: AugmentConfig) -> UInt8Image:
    """Random resized crop, flip, rotation, colour jitter, occasional gray and blur."""
    h, w = img.shape[:2]
    for _ in range(10):
        area = h * w * rng.uniform(*cfg.crop_scale)
        ratio = math.exp(rng.uniform(math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1])))
        cw, ch = round(math.sqrt(area * ratio)), round(math.sqrt(area / ratio))
        if 0 < cw <= w and 0 < ch <= h:
            x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            img = np.ascontiguousarray(img[y0:y0 + ch, x0:x0 + cw])
            break
    if rng.random() < cfg.hflip:
        img = np.ascontiguousarray(img[:, ::-1])
    if cfg.rotate_deg > 0:
        ang = rng.uniform(-cfg.rotate_deg, cfg.rotate_deg)
        hh, ww = img.shape[:2]
        m = cv2.getRotationMatrix2D((ww / 2, hh / 2), ang, 1.0)
        img = np.asarray(cv2.warpAffine(img, m, (ww, hh), flags=cv2.INTER_LINEAR,
                                        borderMode=cv2.BORDER_REFLECT101), np.uint8)
    f = img.astype(np.float32)
    f *= rng.uniform(1 - cfg.brightness, 1 + cfg.brightness)
    mean = f.mean()
    f = (f - mean) * rng.uniform(1 - cfg.contrast, 1 + cfg.contrast) + mean
    gray = f.mean(axis=2, keepdims=True)
    sat = 0.0 if rng.random() < cfg.gray else rng.uniform(1 - cfg.saturation, 1 + cfg.saturation)
    f = gray + (f - gray) * sat
    out = np.clip(f, 0, 255).astype(np.uint8)
    if rng.random() < cfg.blur:
        k = int(rng.choice([3, 5]))
        out = cv2.GaussianBlur(out, (k, k), 0)
    return out  # type: ignore[no-any-return]


class ImageDataset(Dataset[tuple[torch.Tensor, int]]):
    """Samples -> (3 x S x S tensor, class index); optional augmentation seeded per (seed, epoch, index)."""

    def __init__(self, samples: Sequence[Sample], classes: Sequence[str], augment_cfg: AugmentConfig | None = None,
                 seed: int = 1337, input_size: int = INPUT_SIZE) -> None:
        self.samples = list(samples)
        self.input_size = input_size
        self.index = {c: i for i, c in enumerate(classes)}
        self.augment_cfg = augment_cfg
        self.seed = seed
        self.epoch = 0
        for s in self.samples:  # warn about missing files once, up front
            if not s.path.is_file():
                load_image_bgr(s.path)

    def __len__(self) -> int:
        return len(self.samples)

    def targets(self) -> list[int]:
        return [self.index[s.label] for s in self.samples]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        s = self.samples[i]
        img = load_image_bgr(s.path)
        if self.augment_cfg is not None:
            rng = np.random.default_rng((self.seed, self.epoch, i))
            img = augment(img, rng, self.augment_cfg)
        return torch.from_numpy(to_input(img, self.input_size)), self.index[s.label]
