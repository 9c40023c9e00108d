"""Calibration sets for the Hailo DFC, made by the daemon's own preprocessing from the registry sample media.

Two .npy files (uint8, NHWC, the colour order the camera delivers -- BGR -- because the HEF input takes the
camera's frames and the model script folds colour conversion and normalisation in):

- ``detector_calib.npy``: (N, H, W, 3) frames letterboxed to the detector HEF input with
  :func:`edge_agent.vision.preprocess.letterbox` (exactly what the daemon feeds the chip);
- ``classifier_calib.npy``: (M, S, S, 3) face crops cut with :func:`edge_agent.vision.crop.crop_faces` from the
  faces the ONNX detector finds in the same media (the daemon's crop path: same margin, same alignment flag).

Sources, in order: every frame of the sample videos, then the sample images; when that is fewer than
``count``, the same media horizontally mirrored (still real frames and real faces). Nothing is synthesised.

    python -m build.calibration --detector models/detector/retinaface-mnet025 \
        --classifier models/classifier/mnv3s-facex7 --input-size 640x384 --out build/calib --count 1024
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from edge_agent.assets import fetch
from edge_agent.backends.onnx import OnnxBackend
from edge_agent.detector import FaceDetector
from edge_agent.manifest import load_artifact
from edge_agent.vision.crop import crop_faces
from edge_agent.vision.preprocess import letterbox

log = logging.getLogger(__name__)

UInt8 = npt.NDArray[np.uint8]

SAMPLE_VIDEOS = ("single_face.mp4", "WolfgangLanger_Pexels.mp4", "face_noface.mov", "noface_face.mov",
                 "no_face.mp4")
SAMPLE_IMAGES = ("multi_face.jpg", "single_face.jpg", "BWPictureHuman.jpg", "0-f1-su-ph.jpg", "0-f15-hao-ph.jpg",
                 "15-f13-anc-ph.jpg", "45-m7-di-ph.jpg", *(f"faceapi_sample{i}.jpg" for i in range(1, 7)))
DETECTOR_FILE = "detector_calib.npy"
CLASSIFIER_FILE = "classifier_calib.npy"


def media_frames(videos: tuple[str, ...] = SAMPLE_VIDEOS, images: tuple[str, ...] = SAMPLE_IMAGES,
                 mirrored: bool = False) -> Iterator[tuple[str, UInt8]]:
    """(source label, BGR frame) for every video frame then every image, optionally mirrored."""
    suffix = " (mirrored)" if mirrored else ""
    for name in videos:
        cap = cv2.VideoCapture(str(fetch(name)))
        try:
            i = 0
            while True:
                ok, frame = cap.read()
                if not ok:
                    break
                yield f"{name}#{i}{suffix}", (cv2.flip(frame, 1) if mirrored else frame)
                i += 1
        finally:
            cap.release()
    for name in images:
        img = cv2.imread(str(fetch(name)), cv2.IMREAD_COLOR)
        if img is None:
            raise RuntimeError(f"cannot decode sample image {name}")
        yield f"{name}{suffix}", (cv2.flip(img, 1) if mirrored else img)


def all_frames(videos: tuple[str, ...] = SAMPLE_VIDEOS,
               images: tuple[str, ...] = SAMPLE_IMAGES) -> Iterator[tuple[str, UInt8]]:
    yield from media_frames(videos, images, mirrored=False)
    yield from media_frames(videos, images, mirrored=True)


def detector_sample(frame_bgr: UInt8, input_wh: tuple[int, int]) -> UInt8:
    """The frame as the detector HEF sees it: letterboxed to exactly ``input_wh``, BGR uint8 HxWx3."""
    img, _, _ = letterbox(frame_bgr, input_wh, dynamic=False)
    return np.ascontiguousarray(img)


@dataclass
class CalibrationSets:
    detector: UInt8  # (N, H, W, 3)
    classifier: UInt8  # (M, S, S, 3)
    detector_sources: list[str]
    faces_per_source: dict[str, int]


def build_sets(
    detector: FaceDetector,
    det_input_wh: tuple[int, int],
    crop_wh: tuple[int, int],
    count: int,
    *,
    margin: float = 0.2,
    align: bool = False,
    frames: Iterator[tuple[str, UInt8]] | None = None,
) -> CalibrationSets:
    """Walk the media until ``count`` detector frames and ``count`` face crops are collected (or media end)."""
    det: list[UInt8] = []
    crops: list[UInt8] = []
    det_src: list[str] = []
    faces: dict[str, int] = {}
    for label, frame in frames if frames is not None else all_frames():
        if len(det) < count:
            det.append(detector_sample(frame, det_input_wh))
            det_src.append(label)
        if len(crops) < count:
            dets = detector.detect(frame)
            if len(dets):
                batch = crop_faces(frame, dets, crop_wh, margin=margin, align=align)
                crops.extend(batch[: count - len(crops)])
                faces[label] = len(dets)
        if len(det) >= count and len(crops) >= count:
            break
    if not det or not crops:
        raise RuntimeError(f"calibration media gave {len(det)} frames and {len(crops)} face crops; need both")
    return CalibrationSets(np.stack(det), np.stack(crops), det_src, faces)


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}") from None
    return w, h


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m build.calibration", description=__doc__.split("\n\n")[0])
    p.add_argument("--detector", type=Path, required=True,
                   help="ONNX detector artifact used to find the faces (any output form)")
    p.add_argument("--classifier", type=Path, required=True,
                   help="classifier artifact (ONNX or HEF): its input size sets the crop size")
    p.add_argument("--input-size", type=_size, default=(640, 384),
                   help="detector HEF input WIDTHxHEIGHT (default 640x384, the deploy variant's)")
    p.add_argument("--count", type=int, default=1024, help="frames and crops wanted (default 1024)")
    p.add_argument("--margin", type=float, default=0.2, help="crop margin, as classifier.margin (default 0.2)")
    p.add_argument("--align", action="store_true", help="aligned crops, as classifier.align = true")
    p.add_argument("--score-threshold", type=float, default=0.6)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.count < 1:
        p.error("--count must be >= 1")
    det_art = load_artifact(args.detector)
    if det_art.manifest.format != "onnx":
        p.error(f"--detector must be an ONNX artifact, got {det_art.manifest.format}")
    cls_art = load_artifact(args.classifier)
    crop_wh = (int(cls_art.manifest.preprocess.input_size[0]), int(cls_art.manifest.preprocess.input_size[1]))
    backend = OnnxBackend(det_art.path, intra_op_threads=0)
    detector = FaceDetector(det_art, backend, score_threshold=args.score_threshold)
    sets = build_sets(detector, args.input_size, crop_wh, args.count, margin=args.margin, align=args.align)
    args.out.mkdir(parents=True, exist_ok=True)
    np.save(args.out / DETECTOR_FILE, sets.detector)
    np.save(args.out / CLASSIFIER_FILE, sets.classifier)
    log.info("wrote %s %s and %s %s (faces from %d frames)", DETECTOR_FILE, sets.detector.shape, CLASSIFIER_FILE,
             sets.classifier.shape, len(sets.faces_per_source))
    short = [n for n, a in ((DETECTOR_FILE, sets.detector), (CLASSIFIER_FILE, sets.classifier)) if len(a) < args.count]
    if short:
        log.warning("fewer than %d samples in %s: the sample media ran out", args.count, ", ".join(short))
    return 0


if __name__ == "__main__":
    sys.exit(main())
