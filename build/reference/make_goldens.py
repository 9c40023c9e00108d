"""Write the vision golden fixtures: the real exported detector on a real image + torch reference post-processing.

    python -m build.reference.make_goldens [--detector models/detector/retinaface-mnet025] [--image multi_face.jpg]

Outputs (tests/fixtures/vision/, small compressed .npz):

* ``priors.npz``: biubug6 ``PriorBox`` priors for two input sizes (reference for ``vision.anchors``).
* ``retinaface_<image>.npz``: the image's geometry, a strided sample of the reference input tensor (built here
  with plain cv2/numpy, independently of ``vision.preprocess``), the detector's raw loc/conf/landmarks for the
  top-N anchors by face score with their prior indices (every other anchor scores below the lowest threshold
  used), and the reference detections (``detect.py`` post-processing in torch) for two operating points:
  the daemon default (0.6) and biubug6's evaluation setting (0.02, top-k 5000, keep 750).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path

import cv2
import numpy as np
import torch

from build.reference.box_utils import PriorBox, detect_postprocess
from edge_agent.assets import fetch
from edge_agent.backends.onnx import OnnxBackend
from edge_agent.manifest import load_artifact

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "tests" / "fixtures" / "vision"
PRIOR_SIZES = ((384, 640), (256, 320))  # (H, W)
KEEP_ANCHORS = 1000
# (name, confidence_threshold, nms_threshold, top_k, keep_top_k)
OPERATING_POINTS = (("default", 0.6, 0.4, 500, 50), ("eval", 0.02, 0.4, 5000, 750))
TENSOR_STRIDE = 8


def reference_input(image_bgr: np.ndarray, target_wh: tuple[int, int], multiple: int,
                    mean: tuple[float, float, float]) -> tuple[np.ndarray, dict[str, object]]:
    """Letterbox (fit, pad right/bottom with black to a multiple) and subtract the BGR mean, written plainly."""
    h, w = image_bgr.shape[:2]
    s = min(target_wh[0] / w, target_wh[1] / h)
    nw, nh = min(target_wh[0], round(w * s)), min(target_wh[1], round(h * s))
    interp = cv2.INTER_AREA if nw < w else cv2.INTER_LINEAR
    resized = cv2.resize(image_bgr, (nw, nh), interpolation=interp)
    out_w, out_h = math.ceil(nw / multiple) * multiple, math.ceil(nh / multiple) * multiple
    canvas = np.zeros((out_h, out_w, 3), np.uint8)
    canvas[:nh, :nw] = resized
    tensor = (canvas.astype(np.float32) - np.array(mean, np.float32)).transpose(2, 0, 1)[None].copy()
    geom = {"frame_wh": [w, h], "input_wh": [out_w, out_h], "scale": [nw / w, nh / h]}
    return tensor, geom


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--detector", type=Path, default=REPO / "models" / "detector" / "retinaface-mnet025")
    ap.add_argument("--image", default="multi_face.jpg")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    art = load_artifact(args.detector)
    m = art.manifest
    if m.anchors is None or m.detector_outputs is None or m.detector_outputs.kind != "decoded":
        raise SystemExit(f"{args.detector}: need a detector artifact with decoded outputs")
    spec, outs = m.anchors, m.detector_outputs
    args.out.mkdir(parents=True, exist_ok=True)

    priors_npz: dict[str, np.ndarray] = {}
    for h, w in PRIOR_SIZES:
        pb = PriorBox([list(x) for x in spec.min_sizes], list(spec.steps), spec.clip, (h, w))
        priors_npz[f"priors_{h}x{w}"] = pb.forward().numpy()
    np.savez_compressed(args.out / "priors.npz", **priors_npz)

    image = cv2.imread(str(fetch(args.image)), cv2.IMREAD_COLOR)
    if image is None:
        raise SystemExit(f"cannot decode {args.image}")
    pre = m.preprocess
    tensor, geom = reference_input(image, pre.input_size, pre.size_multiple, pre.mean)
    backend = OnnxBackend(art.path, intra_op_threads=1)
    result = backend.run({m.inputs[0].name: tensor})
    assert outs.loc and outs.conf and outs.landmarks
    loc = torch.from_numpy(np.asarray(result[outs.loc][0], np.float32))
    conf = torch.from_numpy(np.asarray(result[outs.conf][0], np.float32))
    ldm = torch.from_numpy(np.asarray(result[outs.landmarks][0], np.float32))
    if not outs.conf_is_probability:
        conf = torch.softmax(conf, dim=-1)
    in_w, in_h = geom["input_wh"]  # type: ignore[misc]
    priors = PriorBox([list(x) for x in spec.min_sizes], list(spec.steps), spec.clip, (in_h, in_w)).forward()

    order = torch.sort(conf[:, 1], descending=True, stable=True).indices[:KEEP_ANCHORS]
    lowest = min(p[1] for p in OPERATING_POINTS)
    if float(conf[order[-1], 1]) > lowest:
        raise SystemExit(f"more than {KEEP_ANCHORS} anchors score above {lowest}; raise KEEP_ANCHORS")
    # Reference on the sparse arrays the test will rebuild (non-stored anchors: conf (1, 0), loc/ldm 0).
    sparse_conf = torch.zeros_like(conf)
    sparse_conf[:, 0] = 1.0
    sparse_conf[order] = conf[order]
    fixture: dict[str, np.ndarray] = {
        "anchor_index": order.numpy().astype(np.int64),
        "loc": loc[order].numpy(), "conf": conf[order].numpy(), "landmarks": ldm[order].numpy(),
        "num_anchors": np.array(loc.shape[0]),
        "frame_wh": np.array(geom["frame_wh"]), "input_wh": np.array(geom["input_wh"]),
        "scale": np.array(geom["scale"], np.float64),
        "tensor_stride": np.array(TENSOR_STRIDE),
        "tensor_sample": tensor[0, :, ::TENSOR_STRIDE, ::TENSOR_STRIDE].copy(),
    }
    summary: dict[str, object] = {"image": args.image, "model": m.model_id, "geometry": geom}
    for name, thr, nms_t, top_k, keep in OPERATING_POINTS:
        boxes, scores, lms = detect_postprocess(
            loc, sparse_conf, ldm, priors, spec.variances, input_wh=(in_w, in_h),
            resize=(geom["scale"][0], geom["scale"][1]),  # type: ignore[index]
            frame_wh=(geom["frame_wh"][0], geom["frame_wh"][1]),  # type: ignore[index]
            confidence_threshold=thr, nms_threshold=nms_t, top_k=top_k, keep_top_k=keep,
        )
        fixture[f"{name}_params"] = np.array([thr, nms_t, top_k, keep], np.float64)
        fixture[f"{name}_boxes"] = boxes.numpy()
        fixture[f"{name}_scores"] = scores.numpy()
        fixture[f"{name}_landmarks"] = lms.numpy().reshape(-1, 5, 2)
        summary[name] = len(scores)
    stem = Path(args.image).stem
    np.savez_compressed(args.out / f"retinaface_{stem}.npz", **fixture)
    log.info("wrote %s: %s", args.out, json.dumps(summary))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
