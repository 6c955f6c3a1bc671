"""The breast mask, the chest-wall side, crops, patches and tiles over a mask."""
from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu

from dashboard.imaging.model import ImagingError


# ---------------------------------------------------------------- breast mask
def block_mean(img: np.ndarray, k: int) -> np.ndarray:
    """Mean over k x k pixel blocks: (H, W) any units -> (H//k, W//k) float32 in the same units.

    The last < k rows and columns are dropped; k <= 1 returns the image as float32.
    """
    if k <= 1:
        return np.asarray(img, np.float32)
    h, w = (img.shape[0] // k) * k, (img.shape[1] // k) * k
    return img[:h, :w].astype(np.float32).reshape(h // k, k, w // k, k).mean(axis=(1, 3))


def segment_breast(img: np.ndarray, *, work_size: int = 512) -> np.ndarray:
    """Breast mask (H, W) bool of a dense-bright grey image (any units).

    Otsu threshold between background and tissue on a ~``work_size`` px thumbnail, a small opening
    that cuts thin film borders and letters off the breast, the largest connected component (so
    film labels and markers, which are separate bright blobs, drop out), then hole filling. The
    mask is scaled back to the input size by nearest neighbour.
    """
    a = np.asarray(img)
    if a.ndim != 2 or min(a.shape) < 2:
        raise ImagingError(f"segment_breast needs a 2-D grey image; got shape {a.shape}.")
    k = max(1, int(np.ceil(max(a.shape) / work_size)))
    t = block_mean(a, k)
    if not np.isfinite(t).all():
        t = np.nan_to_num(t, nan=float(np.nanmin(t)) if np.isfinite(t).any() else 0.0)
    if float(t.max()) <= float(t.min()):
        return np.zeros(a.shape, bool)
    thr = threshold_otsu(t)
    # Otsu lands between background and the tissue mean; the thin periphery of the breast is
    # darker than that, so step down towards the background level.
    bg = float(np.median(t[t <= thr]))
    m = t > bg + 0.35 * (thr - bg)
    r = max(1, round(min(t.shape) / 200))
    m = ndimage.binary_opening(m, structure=ndimage.generate_binary_structure(2, 1), iterations=r)
    labels, n = ndimage.label(m)
    if n == 0:
        return np.zeros(a.shape, bool)
    counts = np.bincount(labels.ravel())
    counts[0] = 0
    m = labels == counts.argmax()
    # Digitised film: edge strips and scanner borders along the image edge are thin bands that the
    # small opening leaves joined to the breast. A disk opening of ~3% of the short side removes
    # bands narrower than twice that; the breast, far wider, keeps its outline (its thin skin-line
    # periphery is restored by keeping the original mask pixels near what survived).
    R = max(2, round(0.03 * min(t.shape)))
    yy, xx = np.mgrid[-R:R + 1, -R:R + 1]
    disk = xx ** 2 + yy ** 2 <= R ** 2
    core = ndimage.binary_opening(m, structure=disk)
    labels, n = ndimage.label(core)
    if n:
        counts = np.bincount(labels.ravel())
        counts[0] = 0
        core = labels == counts.argmax()
        m &= ndimage.binary_dilation(core, structure=ndimage.generate_binary_structure(2, 1), iterations=max(1, R // 3))
    m = ndimage.binary_fill_holes(m)
    if k > 1:  # nearest-neighbour upsampling; edge rows/cols dropped by the block mean repeat the last
        rows = np.minimum(np.arange(a.shape[0]) // k, m.shape[0] - 1)
        cols = np.minimum(np.arange(a.shape[1]) // k, m.shape[1] - 1)
        m = m[rows[:, None], cols[None, :]]
    return m


def chest_wall_side(mask: np.ndarray, laterality: str = "") -> str:
    """'left' or 'right': the image side the chest wall is on, from the breast mask (H, W) bool.

    The breast is widest at the chest wall and tapers to the nipple, so the mask fills more of the
    rows in the outer tenth of its column range on the chest-wall side (this works whether or not
    the breast touches the image edge, e.g. on digitised film with a black margin). When the two
    sides are too close to call, ``laterality`` decides by the hanging convention (L: chest wall
    left, R: right); without it the side with more breast area wins.
    """
    m = np.asarray(mask, bool)
    cols = np.flatnonzero(m.any(axis=0))
    if cols.size == 0:
        lat = str(laterality).upper()[:1]
        if lat in {"L", "R"}:
            return "left" if lat == "L" else "right"
        raise ImagingError("No breast tissue was found in the image, so its orientation is unknown. "
                           "Check that the file is a mammogram and is not blank.")
    c0, c1 = int(cols[0]), int(cols[-1])
    band = max(1, (c1 - c0 + 1) // 10)
    left = m[:, c0:c0 + band].mean()
    right = m[:, c1 - band + 1:c1 + 1].mean()
    if abs(left - right) >= 0.02:
        return "left" if left > right else "right"
    lat = str(laterality).upper()[:1]
    if lat in {"L", "R"}:
        return "left" if lat == "L" else "right"
    mid = (m.shape[1]) / 2
    col_mass = m.sum(axis=0)
    return "left" if col_mass[: int(mid)].sum() >= col_mass[int(mid):].sum() else "right"


def crop_to_mask(img: np.ndarray, mask: np.ndarray, margin: int = 0) -> tuple[np.ndarray, tuple[int, int]]:
    """Crop ``img`` (H, W[, C]) to the mask's bounding box plus ``margin`` px.

    Returns (cropped, (x0, y0)): the crop and its top-left corner in the input's pixels.
    """
    m = np.asarray(mask, bool)
    rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
    if rows.size == 0:
        raise ImagingError("The mask is empty: there is no breast region to crop to.")
    y0, y1 = max(0, rows[0] - margin), min(m.shape[0], rows[-1] + 1 + margin)
    x0, x1 = max(0, cols[0] - margin), min(m.shape[1], cols[-1] + 1 + margin)
    return img[y0:y1, x0:x1], (int(x0), int(y0))


def crop_patch(img: np.ndarray, x0: int, y0: int, size: int) -> np.ndarray:
    """The (size, size[, C]) patch whose top-left pixel is (x0, y0); zero outside ``img``."""
    a = np.asarray(img)
    x0, y0, size = int(x0), int(y0), int(size)
    if size <= 0:
        raise ImagingError(f"Patch size must be positive, got {size}.")
    out = np.zeros((size, size) + a.shape[2:], a.dtype)
    sy0, sy1 = max(y0, 0), min(y0 + size, a.shape[0])
    sx0, sx1 = max(x0, 0), min(x0 + size, a.shape[1])
    if sy1 > sy0 and sx1 > sx0:
        out[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = a[sy0:sy1, sx0:sx1]
    return out


def _grid(extent: int, size: int, stride: int) -> np.ndarray:
    """Patch origins along one axis: every ``stride`` from 0, plus one flush with the far edge."""
    last = max(extent - size, 0)
    pos = np.arange(0, last + 1, stride)
    return pos if pos[-1] == last else np.append(pos, last)


def tile(mask: np.ndarray, size: int, stride: int, min_fraction: float = 0.0) -> np.ndarray:
    """Patch origins (K, 2) int64 of (x0, y0) in the mask's pixels whose breast fraction >= min_fraction.

    The grid steps by ``stride`` and adds a last row/column flush with the far edge, so every pixel
    is covered; an image smaller than ``size`` gets the single origin (0, 0) (patch zero-padded).
    Fractions come from an integral image, so all patches are scored at once. Row-major order.
    """
    m = np.asarray(mask, bool)
    if size <= 0 or stride <= 0:
        raise ImagingError(f"tile needs positive size and stride, got size={size}, stride={stride}.")
    h, w = m.shape
    ii = np.zeros((h + 1, w + 1), np.int64)
    ii[1:, 1:] = m.cumsum(0).cumsum(1)
    ys, xs = _grid(h, size, stride), _grid(w, size, stride)
    y0, x0 = np.meshgrid(ys, xs, indexing="ij")
    y1, x1 = np.minimum(y0 + size, h), np.minimum(x0 + size, w)
    count = ii[y1, x1] - ii[y0, x1] - ii[y1, x0] + ii[y0, x0]
    keep = (count / float(size * size)) >= min_fraction
    return np.stack([x0[keep], y0[keep]], axis=1).astype(np.int64)


