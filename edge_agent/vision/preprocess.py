"""Image -> model input tensor, driven entirely by a manifest's ``Preprocess`` section.

Two steps, both cheap on the hot path:

1. geometry: :func:`letterbox` (keep aspect, fit inside the target, pad right/bottom with black) or
   :func:`stretch` (resize to the target, aspect not kept) -> a uint8 HxWx3 image at the network size and the
   :class:`Geometry` that maps network pixels back to frame pixels;
2. :func:`to_tensor`: colour order, ``scale``, ``mean``/``std``, layout and dtype in one fused pass per channel
   (``x * (scale / std) - mean / std`` written straight into the output buffer), or a plain channel reorder when
   the model takes uint8 (normalisation folded into the model).

Padding is black in raw-pixel space (before normalisation), so the uint8 and float32 paths see the same image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from edge_agent.manifest import Preprocess

UInt8Image = npt.NDArray[np.uint8]
Tensor = npt.NDArray[np.float32] | npt.NDArray[np.uint8]


@dataclass(frozen=True, slots=True)
class Geometry:
    """How a frame was mapped onto the network input.

    ``network_px = frame_px * scale`` per axis (sx, sy); padding is on the right/bottom only, so undoing the
    mapping is ``frame_px = network_px / scale``. ``input_wh`` is the network input size (width, height).
    """

    scale: tuple[float, float]
    pad: tuple[int, int]  # (right, bottom) in network pixels
    input_wh: tuple[int, int]
    frame_wh: tuple[int, int]


def round_up(value: int, multiple: int) -> int:
    return int(math.ceil(value / multiple) * multiple)


def fit_size(image_wh: tuple[int, int], target_wh: tuple[int, int]) -> tuple[tuple[int, int], float]:
    """Size of ``image_wh`` scaled (up or down) to fit inside ``target_wh`` keeping aspect, and the scale."""
    w, h = image_wh
    tw, th = target_wh
    if w <= 0 or h <= 0:
        raise ValueError(f"cannot resize an empty image of size {w}x{h}")
    s = min(tw / w, th / h)
    nw = max(1, min(tw, round(w * s)))
    nh = max(1, min(th, round(h * s)))
    return (nw, nh), s


def _resize(image: UInt8Image, size_wh: tuple[int, int]) -> UInt8Image:
    if (image.shape[1], image.shape[0]) == size_wh:
        return image
    interp = cv2.INTER_AREA if size_wh[0] < image.shape[1] else cv2.INTER_LINEAR
    return cv2.resize(image, size_wh, interpolation=interp)  # type: ignore[return-value]


def letterbox_size(
    image_wh: tuple[int, int], target_wh: tuple[int, int], multiple: int = 32, dynamic: bool = False
) -> tuple[tuple[int, int], tuple[int, int]]:
    """The resized size (w, h) of a :func:`letterbox` and the padded output size (w, h)."""
    (nw, nh), _ = fit_size(image_wh, target_wh)
    out_wh = (round_up(nw, multiple), round_up(nh, multiple)) if dynamic else target_wh
    return (nw, nh), (int(out_wh[0]), int(out_wh[1]))


def letterbox(
    image: UInt8Image, target_wh: tuple[int, int], multiple: int = 32, dynamic: bool = False
) -> tuple[UInt8Image, tuple[float, float], tuple[int, int]]:
    """Resize ``image`` (HxWx3 uint8) to fit inside ``target_wh`` keeping aspect, pad right/bottom with black.

    ``dynamic=False`` pads to exactly ``target_wh``; ``dynamic=True`` pads only up to the next multiple of
    ``multiple`` (a 1280x720 frame into 640x640 becomes 640x360 padded to 640x384). Returns the padded image,
    the scale (sx, sy) with sx == sy (network px = frame px * s, up to rounding of the resized size) and the
    padding (right, bottom).
    """
    (nw, nh), (out_w, out_h) = letterbox_size((image.shape[1], image.shape[0]), target_wh, multiple, dynamic)
    resized = _resize(image, (nw, nh))
    pad_r, pad_b = out_w - nw, out_h - nh
    if pad_r or pad_b:
        resized = cv2.copyMakeBorder(  # type: ignore[assignment]
            resized, 0, pad_b, 0, pad_r, cv2.BORDER_CONSTANT, value=(0, 0, 0)
        )
    # The exact per-axis scale of the resize that happened (rounding of nw/nh included).
    scale = (nw / image.shape[1], nh / image.shape[0])
    return resized, scale, (pad_r, pad_b)


def stretch(image: UInt8Image, target_wh: tuple[int, int]) -> tuple[UInt8Image, tuple[float, float]]:
    """Resize to exactly ``target_wh`` ignoring aspect. Returns the image and the per-axis scale (sx, sy)."""
    resized = _resize(image, target_wh)
    return resized, (target_wh[0] / image.shape[1], target_wh[1] / image.shape[0])


def network_size(pre: Preprocess, input_size: tuple[int, int] | None = None) -> tuple[int, int]:
    """The (width, height) a model runs at: the manifest default or an override the manifest allows."""
    if input_size is None or tuple(input_size) == tuple(pre.input_size):
        return (int(pre.input_size[0]), int(pre.input_size[1]))
    if not pre.dynamic_size:
        raise ValueError(
            f"input size {input_size[0]}x{input_size[1]} requested but the model has a fixed input of "
            f"{pre.input_size[0]}x{pre.input_size[1]}; drop the override or export a dynamic-size model"
        )
    w, h = input_size
    if w % pre.size_multiple or h % pre.size_multiple or w <= 0 or h <= 0:
        raise ValueError(f"input size {w}x{h} must be positive multiples of {pre.size_multiple} for this model")
    return (int(w), int(h))


def _affine(pre: Preprocess) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Per-channel (a, b) such that ``tensor = pixel * a + b`` (channels in the model's colour order)."""
    std = np.asarray(pre.std, np.float64)
    a = pre.scale / std
    b = -np.asarray(pre.mean, np.float64) / std
    return a.astype(np.float32), b.astype(np.float32)


def to_tensor(images_bgr: UInt8Image, pre: Preprocess, pad: tuple[int, int] = (0, 0)) -> Tensor:
    """(N,H,W,3) or (H,W,3) uint8 BGR -> (N,3,H,W) / (N,H,W,3) tensor as ``pre`` says, in one pass per channel.

    ``pad`` = (right, bottom) adds black (raw pixel 0) columns/rows, written straight into the tensor: the same
    tensor as padding the image first, without the padded uint8 copy.
    """
    batch = images_bgr[None] if images_bgr.ndim == 3 else images_bgr
    if batch.ndim != 4 or batch.shape[-1] != 3 or batch.dtype != np.uint8:
        raise ValueError(f"expected uint8 images shaped (N,H,W,3) or (H,W,3), got {images_bgr.dtype} "
                         f"{images_bgr.shape}")
    pad_r, pad_b = pad
    if pad_r < 0 or pad_b < 0:
        raise ValueError(f"padding must be >= 0, got {pad}")
    if pad_r or pad_b:
        if pre.dtype == "uint8":  # rare (normalisation folded into the model): pad the image, then reorder
            padded = np.zeros((batch.shape[0], batch.shape[1] + pad_b, batch.shape[2] + pad_r, 3), np.uint8)
            padded[:, :batch.shape[1], :batch.shape[2]] = batch
            return to_tensor(padded, pre)
        return _to_tensor_padded(batch, pre, pad_r, pad_b)
    n, h, w, _ = batch.shape
    # src[c] is the BGR channel that feeds model channel c.
    src = (2, 1, 0) if pre.color_order == "RGB" else (0, 1, 2)
    nchw = pre.layout == "NCHW"
    if pre.dtype == "uint8":
        if nchw:
            return np.ascontiguousarray(batch[..., list(src)].transpose(0, 3, 1, 2))
        return batch[..., list(src)] if src != (0, 1, 2) else batch
    a, b = _affine(pre)
    out: npt.NDArray[np.float32] = np.empty((n, 3, h, w) if nchw else (n, h, w, 3), np.float32)
    for c, s in enumerate(src):
        dst = out[:, c] if nchw else out[..., c]
        np.multiply(batch[..., s], a[c], out=dst, dtype=np.float32)
        dst += b[c]
    return out


def _to_tensor_padded(batch: UInt8Image, pre: Preprocess, pad_r: int, pad_b: int) -> Tensor:
    """float32 tensor of ``batch`` padded right/bottom; the padding holds what a black pixel normalises to."""
    n, h, w, _ = batch.shape
    src = (2, 1, 0) if pre.color_order == "RGB" else (0, 1, 2)
    nchw = pre.layout == "NCHW"
    a, b = _affine(pre)
    out: npt.NDArray[np.float32] = np.empty((n, 3, h + pad_b, w + pad_r) if nchw else (n, h + pad_b, w + pad_r, 3),
                                            np.float32)
    for c, s in enumerate(src):
        full = out[:, c] if nchw else out[..., c]
        dst = full[:, :h, :w]
        np.multiply(batch[..., s], a[c], out=dst, dtype=np.float32)
        dst += b[c]
        black = np.float32(0.0) * a[c] + b[c]  # exactly what the unpadded path computes for a 0 pixel
        full[:, h:, :] = black
        full[:, :h, w:] = black
    return out


def prepare(
    image_bgr: UInt8Image, pre: Preprocess, input_size: tuple[int, int] | None = None
) -> tuple[Tensor, Geometry]:
    """Frame (HxWx3 uint8 BGR) -> batch-of-one tensor for the model and the geometry to undo afterwards."""
    if image_bgr.ndim != 3 or image_bgr.shape[2] != 3 or image_bgr.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 BGR frame, got {image_bgr.dtype} {image_bgr.shape} "
                         "(convert grey/BGRA frames with cv2.cvtColor first)")
    image_bgr = np.ascontiguousarray(image_bgr)
    target = network_size(pre, input_size)
    frame_wh = (int(image_bgr.shape[1]), int(image_bgr.shape[0]))
    if pre.resize == "letterbox":  # resize only; the padding is written into the tensor (no padded copy)
        (nw, nh), out_wh = letterbox_size(frame_wh, target, pre.size_multiple, pre.dynamic_size)
        img = _resize(image_bgr, (nw, nh))
        scale = (nw / frame_wh[0], nh / frame_wh[1])
        pad = (out_wh[0] - nw, out_wh[1] - nh)
    else:
        img, scale = stretch(image_bgr, target)
        pad = (0, 0)
        out_wh = (int(img.shape[1]), int(img.shape[0]))
    geom = Geometry(scale=scale, pad=pad, input_wh=out_wh, frame_wh=frame_wh)
    return to_tensor(img, pre, pad), geom
