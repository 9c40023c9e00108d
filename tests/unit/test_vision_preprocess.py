from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge_agent.manifest import Preprocess
from edge_agent.vision.preprocess import fit_size, letterbox, network_size, prepare, stretch, to_tensor

IMAGENET = Preprocess(
    input_size=(160, 160), resize="stretch", color_order="RGB", layout="NCHW", dtype="float32",
    scale=1 / 255, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
)
RETINA = Preprocess(
    input_size=(640, 640), dynamic_size=True, size_multiple=32, resize="letterbox", color_order="BGR",
    layout="NCHW", dtype="float32", scale=1.0, mean=(104.0, 117.0, 123.0),
)


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(1, 256, (h, w, 3), dtype=np.uint8)


def test_fit_size_keeps_aspect() -> None:
    assert fit_size((1280, 720), (640, 640)) == ((640, 360), 0.5)
    assert fit_size((100, 50), (640, 640)) == ((640, 320), 6.4)


def test_letterbox_dynamic_pads_to_multiple_only() -> None:
    img, scale, pad = letterbox(_image(720, 1280), (640, 640), 32, dynamic=True)
    assert img.shape == (384, 640, 3) and img.dtype == np.uint8
    assert scale == (0.5, 0.5)
    assert pad == (0, 24)
    assert not img[360:].any()  # black padding at the bottom
    assert img[:360].all()  # the image itself has no zero pixels (values drawn from 1..255)


def test_letterbox_fixed_pads_to_target() -> None:
    img, scale, pad = letterbox(_image(720, 1280), (640, 640), 32, dynamic=False)
    assert img.shape == (640, 640, 3)
    assert pad == (0, 280) and scale == (0.5, 0.5)
    assert not img[360:].any()


def test_letterbox_tall_image_pads_right() -> None:
    img, scale, pad = letterbox(_image(400, 200), (640, 384), 32, dynamic=False)
    assert img.shape == (384, 640, 3)
    assert pad == (448, 0)
    assert scale == pytest.approx((192 / 200, 384 / 400))
    assert not img[:, 192:].any()


def test_letterbox_upscales_small_images() -> None:
    img, scale, pad = letterbox(_image(50, 100), (640, 640), 32, dynamic=True)
    assert img.shape == (320, 640, 3) and pad == (0, 0) and scale == (6.4, 6.4)


def test_stretch() -> None:
    img, scale = stretch(_image(100, 200), (160, 160))
    assert img.shape == (160, 160, 3)
    assert scale == (0.8, 1.6)


def test_to_tensor_nchw_rgb_matches_naive() -> None:
    imgs = np.stack([_image(8, 6, 1), _image(8, 6, 2)])
    out = to_tensor(imgs, IMAGENET)
    assert out.shape == (2, 3, 8, 6) and out.dtype == np.float32
    rgb = imgs[..., ::-1].astype(np.float64) / 255
    want = ((rgb - np.array(IMAGENET.mean)) / np.array(IMAGENET.std)).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(out, want, atol=1e-5)


def test_to_tensor_nhwc_bgr_mean_only() -> None:
    pre = RETINA.model_copy(update={"layout": "NHWC"})
    img = _image(5, 7)
    out = to_tensor(img, pre)
    assert out.shape == (1, 5, 7, 3)
    np.testing.assert_allclose(out[0], img.astype(np.float32) - np.array([104, 117, 123], np.float32))


def test_to_tensor_uint8_passthrough_reorders_channels_only() -> None:
    pre = IMAGENET.model_copy(update={"dtype": "uint8"})
    img = _image(4, 4)
    out = to_tensor(img, pre)
    assert out.dtype == np.uint8 and out.shape == (1, 3, 4, 4)
    np.testing.assert_array_equal(out[0], cv2.cvtColor(img, cv2.COLOR_BGR2RGB).transpose(2, 0, 1))
    nhwc = to_tensor(img, pre.model_copy(update={"layout": "NHWC", "color_order": "BGR"}))
    np.testing.assert_array_equal(nhwc[0], img)


def test_to_tensor_empty_batch() -> None:
    out = to_tensor(np.zeros((0, 160, 160, 3), np.uint8), IMAGENET)
    assert out.shape == (0, 3, 160, 160) and out.dtype == np.float32


def test_to_tensor_rejects_wrong_input() -> None:
    with pytest.raises(ValueError, match="uint8"):
        to_tensor(np.zeros((4, 4, 3), np.float32), IMAGENET)  # type: ignore[arg-type]


def test_network_size_rules() -> None:
    assert network_size(RETINA) == (640, 640)
    assert network_size(RETINA, (640, 384)) == (640, 384)
    with pytest.raises(ValueError, match="multiples of 32"):
        network_size(RETINA, (640, 380))
    fixed = RETINA.model_copy(update={"dynamic_size": False})
    with pytest.raises(ValueError, match="fixed input"):
        network_size(fixed, (320, 320))


def test_prepare_padding_is_black_before_normalisation() -> None:
    tensor, geom = prepare(_image(720, 1280), RETINA)
    assert tensor.shape == (1, 3, 384, 640)
    assert geom.input_wh == (640, 384) and geom.frame_wh == (1280, 720) and geom.pad == (0, 24)
    # padded rows hold (0 - mean) in every channel
    np.testing.assert_array_equal(tensor[0, :, 370, 5], np.array([-104, -117, -123], np.float32))


def test_prepare_validates_and_accepts_views() -> None:
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        prepare(np.zeros((10, 10), np.uint8), RETINA)
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        prepare(np.zeros((10, 10, 4), np.uint8), RETINA)
    frame = _image(64, 128)
    view = frame[:, ::2]  # non-contiguous 64x64 view
    a, _ = prepare(view, RETINA, (64, 64))
    b, _ = prepare(np.ascontiguousarray(view), RETINA, (64, 64))
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("pre", [
    RETINA,
    RETINA.model_copy(update={"dynamic_size": False, "input_size": (640, 384)}),
    RETINA.model_copy(update={"color_order": "RGB", "layout": "NHWC", "scale": 1 / 255, "std": (0.2, 0.3, 0.4)}),
    RETINA.model_copy(update={"dtype": "uint8", "color_order": "RGB"}),
])
@pytest.mark.parametrize("hw", [(720, 1280), (360, 640), (400, 200)])
def test_prepare_pads_inside_the_tensor_exactly_like_a_padded_image(pre: Preprocess, hw: tuple[int, int]) -> None:
    """prepare() writes the padding into the tensor; it must equal letterbox (a padded image) + to_tensor."""
    image = _image(*hw, seed=3)
    tensor, geom = prepare(image, pre)
    img, scale, pad = letterbox(image, tuple(pre.input_size), pre.size_multiple, pre.dynamic_size)
    expected = to_tensor(img, pre)
    assert tensor.dtype == expected.dtype and tensor.shape == expected.shape
    np.testing.assert_array_equal(tensor, expected)
    assert geom.pad == pad and geom.scale == scale and geom.input_wh == (img.shape[1], img.shape[0])


def test_to_tensor_rejects_negative_padding() -> None:
    with pytest.raises(ValueError, match="padding"):
        to_tensor(_image(4, 4), RETINA, (-1, 0))
