"""5-point similarity alignment: Umeyama least squares onto a canonical template.

The template is the widely used ArcFace 112x112 five-point layout (left eye, right eye, nose, left and right
mouth corners -- RetinaFace's landmark order), scaled to the output size and shrunk about the centre by
``1 / (1 + 2 * margin)`` so ``margin`` adds context the same way it does for square box crops
(``margin=0`` is the tight ArcFace framing).

Matrices returned here map *continuous* coordinates (pixel i spans [i, i+1)); :func:`to_pixel_index_matrix`
converts them to OpenCV's pixel-centre convention for ``cv2.warpAffine``.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
FloatArray = npt.NDArray[np.float32]

ARCFACE_TEMPLATE_112: F64 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    np.float64,
)


def template(out_wh: tuple[int, int], margin: float = 0.0) -> F64:
    """The five canonical points for an output of ``out_wh`` (width, height) with extra context ``margin``."""
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    w, h = out_wh
    pts = ARCFACE_TEMPLATE_112 / 112.0 * np.array([w, h], np.float64)
    centre = np.array([w / 2.0, h / 2.0])
    out: F64 = centre + (pts - centre) / (1.0 + 2.0 * margin)
    return out


def similarity_transform(src: npt.ArrayLike, dst: npt.ArrayLike) -> F64:
    """Least-squares similarity (rotation, uniform scale, translation) taking ``src`` points onto ``dst``.

    Umeyama (1991), reflections excluded. Returns a (2,3) float64 matrix M with ``dst ~ M @ [x, y, 1]``.
    Raises ValueError when the source points are degenerate (all equal).
    """
    s = np.asarray(src, np.float64).reshape(-1, 2)
    d = np.asarray(dst, np.float64).reshape(-1, 2)
    if s.shape != d.shape or s.shape[0] < 2:
        raise ValueError(f"need matching (N>=2, 2) point sets, got {s.shape} and {d.shape}")
    mu_s, mu_d = s.mean(0), d.mean(0)
    sc, dc = s - mu_s, d - mu_d
    var_s = float((sc**2).sum() / s.shape[0])
    if var_s < 1e-12:
        raise ValueError("similarity_transform: source points are degenerate (all at one place)")
    cov = dc.T @ sc / s.shape[0]
    u, sig, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1.0
    rot = u @ np.diag(sign) @ vt
    scale = float((sig * sign).sum() / var_s)
    m = np.empty((2, 3), np.float64)
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def alignment_matrix(landmarks: npt.ArrayLike, out_wh: tuple[int, int], margin: float = 0.0) -> F64:
    """(5,2) frame landmarks -> (2,3) continuous-coordinate matrix onto the output template."""
    return similarity_transform(landmarks, template(out_wh, margin))


def to_pixel_index_matrix(m: F64) -> F64:
    """Continuous-coordinate affine -> OpenCV pixel-centre convention (x_idx = x_cont - 0.5 on both sides)."""
    out = m.copy()
    out[:, 2] = m[:, 2] + m[:, :2] @ np.array([0.5, 0.5]) - 0.5
    return out
