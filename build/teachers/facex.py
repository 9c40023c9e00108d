"""The facex 1.1.0 expression model (MIT) as a distillation teacher.

Facts read from facex's own source in its wheel (``pip download --no-deps facex==1.1.0``):

* ``facex/core.py``, ``EmotionClassifier.__init__``: the label order is
  ``['anger', 'disgust', 'fear', 'happy', 'neutral', 'sadness', 'surprised']`` (FACEX_LABELS below).
* ``EmotionClassifier.predict``: faces come from OpenCV's Haar cascade on a GRAYSCALE frame and the grayscale
  crop ``img[y:y+h, x:x+w]`` is what is classified (``crop_center(procs_input, ...)``).
* ``facex/utils.py``, ``input_resize``: ``skimage.transform.resize(raw, (200, 200, 3))`` -- a 2-D gray crop is
  broadcast to 3 identical channels and, since skimage converts uint8 to float, values land in [0, 1]
  (the ``/255`` branch only triggers for float input above 1).
* The tflite graph: input ``image_input`` float32 (1, 200, 200, 3), output ``predictis/Softmax`` (1, 7)
  probabilities.

So the teacher sees gray x 3 in [0, 1] at 200 x 200. skimage's anti-aliased resize is approximated here with
OpenCV INTER_AREA (downscale) / INTER_LINEAR (upscale); scikit-image is not a dependency of this project.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

FACEX_LABELS: tuple[str, ...] = ("anger", "disgust", "fear", "happy", "neutral", "sadness", "surprised")
FACEX_INPUT = 200
FACEX_ASSET = "facex_model_optimized.tflite"
FACEX_SOURCE = "facex==1.1.0 (PyPI, MIT), facex/assets/model_optimized.tflite"


def teacher_input(crop_bgr: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    """One BGR face crop -> (200, 200, 3) float32 gray-replicated in [0, 1], as facex feeds its model."""
    if crop_bgr.ndim != 3 or crop_bgr.shape[2] != 3 or crop_bgr.size == 0:
        raise ValueError(f"teacher_input needs a non-empty HxWx3 BGR crop, got shape {crop_bgr.shape}")
    gray = cv2.cvtColor(crop_bgr, cv2.COLOR_BGR2GRAY)
    interp = cv2.INTER_AREA if gray.shape[0] > FACEX_INPUT else cv2.INTER_LINEAR
    small = cv2.resize(gray, (FACEX_INPUT, FACEX_INPUT), interpolation=interp).astype(np.float32) / 255.0
    return np.repeat(small[:, :, None], 3, axis=2)


class FacexTeacher:
    """Runs facex's tflite with ai_edge_litert; ``probs(crops)`` -> (N, 7) softmax in FACEX_LABELS order."""

    def __init__(self, model_path: Path | None = None, num_threads: int = 1) -> None:
        from ai_edge_litert.interpreter import Interpreter

        if model_path is None:
            from edge_agent.assets import fetch

            model_path = fetch(FACEX_ASSET)
        self._it = Interpreter(model_path=str(model_path), num_threads=num_threads)
        self._it.allocate_tensors()
        inp = self._it.get_input_details()[0]
        out = self._it.get_output_details()[0]
        if tuple(inp["shape"]) != (1, FACEX_INPUT, FACEX_INPUT, 3) or tuple(out["shape"]) != (1, len(FACEX_LABELS)):
            raise RuntimeError(
                f"{model_path}: unexpected facex I/O {tuple(inp['shape'])} -> {tuple(out['shape'])}; "
                f"expected (1, 200, 200, 3) -> (1, 7): is this facex 1.1.0's model_optimized.tflite?"
            )
        self._in_idx = int(inp["index"])
        self._out_idx = int(out["index"])
        self.path = model_path

    def probs_one(self, crop_bgr: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        self._it.set_tensor(self._in_idx, teacher_input(crop_bgr)[None])
        self._it.invoke()
        return np.asarray(self._it.get_tensor(self._out_idx)[0], dtype=np.float32).copy()

    def probs(self, crops_bgr: list[npt.NDArray[np.uint8]]) -> npt.NDArray[np.float32]:
        if not crops_bgr:
            return np.zeros((0, len(FACEX_LABELS)), np.float32)
        return np.stack([self.probs_one(c) for c in crops_bgr])
