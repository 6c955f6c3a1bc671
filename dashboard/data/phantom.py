"""Synthetic mammograms with exact ground truth: the embedded demo data.

Everything is generated in **model-space orientation** (chest wall on the LEFT, nipple
pointing right), at 0.2 mm per pixel, as 12-bit MONOCHROME2 values (dense = bright, air
near 0). A right breast is mirrored when it is written to a file (``SyntheticImage.to_file``),
so the file's orientation follows laterality like a real R image.

The anatomy, in the order it is composed (``generate_image``):

- a breast outline (CC: half-ellipse from the chest wall; MLO: longer, reaching the top
  edge, with the pectoral muscle as a bright triangle at the upper left), a nipple bump,
  a thickness fall-off over the last ~12 mm and a skin rim;
- fibroglandular tissue: Gaussian noise shaped in Fourier space to a 1/f^beta power
  spectrum (beta ~ 3, Burgess 2001, Heine 2002), soft-thresholded around a density offset
  (BI-RADS a-d) and an envelope that keeps subcutaneous and retromammary fat;
- Cooper's ligaments (zero-crossing lines of a second field) and tortuous vessels;
- findings with masks: masses (round/oval/irregular; circumscribed, obscured,
  microlobulated, indistinct, spiculated), calcification clusters (coarse benign,
  fine pleomorphic grouped or linear) and architectural distortion.

A lesion is placed at the same distance from the nipple in CC and MLO (the radiologist's
rule for matching a finding across views); calcification particles are placed in 3-D and
projected, so a cluster is the same cluster in both views.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from scipy import ndimage

PIXEL_SPACING_MM = 0.2
SHAPE = (1024, 832)  # (rows, cols) for CC and MLO
MAX_VALUE = 4095  # 12 bits stored
DENSITIES = ("fatty", "scattered", "heterogeneous", "dense")
DENSITY_LETTER = {"fatty": "a", "scattered": "b", "heterogeneous": "c", "dense": "d"}
VIEWS = ("CC", "MLO")
LATERALITIES = ("L", "R")
NORMAL_STRUCTURES = ("skin", "nipple", "pectoral-muscle", "vessel", "fibroglandular", "fat")
MASS_SHAPES = ("round", "oval", "irregular")
MASS_MARGINS = ("circumscribed", "obscured", "microlobulated", "indistinct", "spiculated")
CALC_MORPHOLOGIES = ("coarse", "fine-pleomorphic")
CALC_DISTRIBUTIONS = ("grouped", "linear")
KINDS = ("mass", "calcification", "distortion")

# Density offset of the soft threshold that turns the texture into glandular fraction.
_DENSITY_OFFSET = {"fatty": -2.0, "scattered": -0.95, "heterogeneous": -0.25, "dense": 0.55}


# ----------------------------------------------------------------------------- specs
@dataclass(frozen=True)
class BreastSpec:
    """What the CC and MLO views of one breast share.

    size     0..1, scales the outline (small to large breast)
    density  BI-RADS category name, one of DENSITIES
    """

    size: float = 0.5
    density: str = "scattered"


@dataclass(frozen=True)
class FindingSpec:
    """A lesion of one breast, independent of the view it is seen in.

    kind               "mass" | "calcification" | "distortion"
    size_mm            mass: mean diameter; calcification: cluster extent; distortion: spiculation span
    nipple_distance_mm distance of the lesion centre from the nipple, the same in CC and MLO
    angle_cc_deg / angle_mlo_deg  preferred direction from the nipple axis (positive: downwards
                       in model space); the generator moves it until the lesion fits the breast
    shape, margin      masses (MASS_SHAPES, MASS_MARGINS)
    morphology, distribution  calcifications (CALC_MORPHOLOGIES, CALC_DISTRIBUTIONS)
    seed               drives the lesion's own randomness, so both views show the same lesion
    """

    kind: str
    size_mm: float
    nipple_distance_mm: float
    angle_cc_deg: float = 0.0
    angle_mlo_deg: float = 0.0
    shape: str = ""
    margin: str = ""
    morphology: str = ""
    distribution: str = ""
    seed: int = 0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown finding kind {self.kind!r}")
        if self.kind == "mass" and (self.shape not in MASS_SHAPES or self.margin not in MASS_MARGINS):
            raise ValueError(f"a mass needs a shape in {MASS_SHAPES} and a margin in {MASS_MARGINS}")
        if self.kind == "calcification" and (self.morphology not in CALC_MORPHOLOGIES
                                             or self.distribution not in CALC_DISTRIBUTIONS):
            raise ValueError("a calcification cluster needs a morphology and a distribution")

    @property
    def concepts(self) -> tuple[str, ...]:
        """Built-in concept names (dashboard.data.store.BUILTIN_CONCEPTS), the generic one first
        (as the importers do): mass + shape + margin; calcification + morphology + distribution."""
        if self.kind == "mass":
            return ("mass", f"mass-{self.shape}", f"margin-{self.margin}")
        if self.kind == "calcification":
            return ("calcification", f"calc-{self.morphology}", "calc-grouped")
        return ("architectural-distortion",)

    @property
    def pathology(self) -> str:
        """benign | malignant, from the BI-RADS descriptors (the ground truth of the demo)."""
        if self.kind == "distortion":
            return "malignant"
        if self.kind == "calcification":
            return "malignant" if self.morphology == "fine-pleomorphic" else "benign"
        suspicious = self.shape == "irregular" or self.margin in ("spiculated", "indistinct", "microlobulated")
        return "malignant" if suspicious else "benign"

    def describe(self) -> str:
        """Short report phrase, e.g. '14 mm irregular spiculated mass, malignant'."""
        if self.kind == "mass":
            what = f"{self.size_mm:.0f} mm {self.shape} {self.margin} mass"
        elif self.kind == "calcification":
            arrangement = "linear group" if self.distribution == "linear" else "cluster"
            what = f"{arrangement} of {self.morphology.replace('-', ' ')} calcifications ({self.size_mm:.0f} mm)"
        else:
            what = f"architectural distortion ({self.size_mm:.0f} mm)"
        return f"{what}, {self.pathology}"


@dataclass
class Finding:
    """One rendered finding: its spec, exact mask and centre in one image (model space).

    mask        bool (H, W), the lesion including spicules; for calcifications the cluster region
    center_xy   (x, y) model pixels
    index       the lesion's number within its breast (the same in CC and MLO)
    """

    spec: FindingSpec
    mask: np.ndarray
    center_xy: tuple[float, float]
    index: int = 0

    @property
    def concepts(self) -> tuple[str, ...]:
        return self.spec.concepts

    @property
    def pathology(self) -> str:
        return self.spec.pathology

    @property
    def area_px(self) -> int:
        return int(self.mask.sum())

    def bbox(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) model pixels, x1/y1 exclusive."""
        return _bbox(self.mask)


@dataclass
class SyntheticImage:
    """One synthetic mammogram in model-space orientation (chest wall left).

    pixels     uint16 (H, W), 0..4095, MONOCHROME2
    masks      name -> bool (H, W): 'breast', the normal structures (NORMAL_STRUCTURES, pectoral
               only on MLO) and 'calcification' (the individual particles)
    findings   lesions with their masks
    nipple_xy  (x, y) model pixels of the nipple tip
    """

    laterality: str
    view: str
    pixels: np.ndarray
    masks: dict[str, np.ndarray]
    findings: list[Finding]
    nipple_xy: tuple[float, float]
    density: str
    pixel_spacing_mm: float = PIXEL_SPACING_MM

    @property
    def key(self) -> str:
        return f"{self.laterality}_{self.view}"

    @property
    def flip(self) -> bool:
        """True when the file is the mirror image of model space (right breasts)."""
        return self.laterality == "R"

    def to_file(self, array: np.ndarray) -> np.ndarray:
        """Map a model-space array (H, W) to file/source orientation (chest wall right for R)."""
        return np.ascontiguousarray(array[:, ::-1]) if self.flip else array

    def file_pixels(self) -> np.ndarray:
        return self.to_file(self.pixels)

    def file_bbox(self, mask: np.ndarray) -> tuple[int, int, int, int]:
        """Bounding box (x0, y0, x1, y1) in file pixels of a model-space mask."""
        return _bbox(self.to_file(mask))


@dataclass
class SyntheticCase:
    """One synthetic examination: CC + MLO of one or both breasts.

    label follows from the findings: malignant if any is malignant, else benign if any, else normal.
    """

    case_id: str
    seed: int
    index: int
    label: str
    breasts: dict[str, BreastSpec]
    findings: dict[str, list[FindingSpec]]
    images: list[SyntheticImage] = field(default_factory=list)

    @property
    def image_keys(self) -> list[str]:
        return [f"{lat}_{view}" for lat in self.breasts for view in VIEWS]

    def describe(self) -> str:
        """Report text, e.g. 'Left breast: 14 mm irregular spiculated mass, malignant.'"""
        parts = []
        for lat, specs in self.findings.items():
            side = "Left" if lat == "L" else "Right"
            if specs:
                parts.append(f"{side} breast: " + "; ".join(s.describe() for s in specs) + ".")
        dens = ", ".join(
            f"{'left' if lat == 'L' else 'right'} {b.density} ({DENSITY_LETTER[b.density]})"
            for lat, b in self.breasts.items())
        if not parts:
            parts.append("Normal: no findings.")
        return " ".join(parts) + f" Density: {dens}."


def label_from_findings(specs) -> str:
    """normal | benign | malignant for a collection of FindingSpec (or Finding)."""
    paths = {s.pathology for s in specs}
    if "malignant" in paths:
        return "malignant"
    return "benign" if paths else "normal"


# ----------------------------------------------------------------------------- helpers
def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return (0, 0, 0, 0)
    return (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _smoothstep(x, lo, hi):
    t = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    return t * t * (3 - 2 * t)


@lru_cache(maxsize=16)
def _power_amplitude(shape: tuple[int, int], beta: float, stretch: float, angle: float, fmin: float) -> np.ndarray:
    """|F| of a 1/f^beta field on the rfft2 grid of ``shape`` (cached: the same for every image)."""
    h, w = shape
    fy = np.fft.fftfreq(h).astype(np.float32)[:, None]
    fx = np.fft.rfftfreq(w).astype(np.float32)[None, :]
    if stretch != 1.0:
        c, s = np.float32(np.cos(angle)), np.float32(np.sin(angle))
        fu, fv = fx * c + fy * s, -fx * s + fy * c
        f = np.sqrt((fu * np.float32(stretch)) ** 2 + fv ** 2)
    else:
        f = np.sqrt(fx ** 2 + fy ** 2)
    amp = np.maximum(f, np.float32(fmin)) ** np.float32(-beta / 2)
    amp[0, 0] = 0.0
    amp.flags.writeable = False
    return amp


def power_noise(rng: np.random.Generator, shape, beta: float = 3.0, *, stretch: float = 1.0,
                angle: float = 0.0, fmin: float = 1.0 / 300) -> np.ndarray:
    """Gaussian noise with power spectrum ~ 1/f^beta (f in cycles/pixel), zero mean, unit std.

    ``stretch`` > 1 elongates structures along ``angle`` (radians, from the x axis) by scaling the
    frequency along that direction; the radially averaged exponent is unchanged. Frequencies
    below ``fmin`` are held at fmin (sets the largest structure size). Returns float32 (H, W).
    """
    shape = (int(shape[0]), int(shape[1]))
    amp = _power_amplitude(shape, float(beta), float(stretch), float(angle), float(fmin))
    spec = np.empty(amp.shape, np.complex64)
    spec.real = rng.standard_normal(amp.shape, dtype=np.float32)
    spec.imag = rng.standard_normal(amp.shape, dtype=np.float32)
    spec *= amp
    noise = np.fft.irfft2(spec, s=shape).astype(np.float32)
    noise /= noise.std() + 1e-12
    return noise


def _stamp(img: np.ndarray, xs, ys, radii, amps, *, mask: np.ndarray | None = None,
           profile: str = "chord") -> None:
    """Draw discs at sub-pixel points into ``img`` (H, W) in place, keeping the maximum.

    ``profile`` "chord": amp * sqrt(1 - (d/r)^2) (projected cylinder, vessels and spicules);
    "gauss": amp * exp(-d^2 / (2 (r/2)^2)) (sub-pixel calcifications, blurred by the detector).
    Pixels with d < r are set in ``mask``. Vectorised over points x window offsets.
    """
    xs, ys = np.asarray(xs, np.float32), np.asarray(ys, np.float32)
    radii = np.broadcast_to(np.asarray(radii, np.float32), xs.shape)
    amps = np.broadcast_to(np.asarray(amps, np.float32), xs.shape)
    if xs.size == 0:
        return
    k = int(np.ceil(float(radii.max()) * (1.6 if profile == "gauss" else 1.0))) + 1
    off = np.arange(-k, k + 1, dtype=np.int32)
    ox, oy = np.meshgrid(off, off)
    px = np.rint(xs)[:, None].astype(np.int32) + ox.ravel()[None, :]
    py = np.rint(ys)[:, None].astype(np.int32) + oy.ravel()[None, :]
    d2 = (px - xs[:, None]) ** 2 + (py - ys[:, None]) ** 2
    r = radii[:, None]
    if profile == "gauss":
        val = amps[:, None] * np.exp(-d2 / (2 * (0.5 * r) ** 2))
        inside = d2 < (0.75 * r) ** 2
    else:
        val = amps[:, None] * np.sqrt(np.clip(1 - d2 / (r * r), 0, None))
        inside = d2 < r * r
    h, w = img.shape
    ok = (px >= 0) & (px < w) & (py >= 0) & (py < h) & (val > 0)
    flat = (py * w + px)[ok]
    np.maximum.at(img.reshape(-1), flat, val[ok].astype(img.dtype))
    if mask is not None:
        mask.reshape(-1)[(py * w + px)[ok & inside]] = True


def _curve(rng, start, heading, length, *, step=0.5, wiggle=0.04, pull=None):
    """A tortuous path from ``start`` (x, y): heading does a smoothed random walk (radians per step);
    ``pull`` (target heading, gain) bends it gently towards a direction. Returns (N, 2) xy."""
    x0, y0 = start
    pull, pull_gain = pull if pull is not None else (None, 0.0)
    n = max(2, int(length / step))
    turn = rng.standard_normal(n).astype(np.float32) * wiggle
    turn = ndimage.gaussian_filter1d(turn, sigma=max(1.0, n / 40)) * np.sqrt(max(1.0, n / 40))
    ang = heading + np.cumsum(turn)
    if pull is not None and pull_gain > 0:
        # bend gently towards a target direction (vessels head for the nipple region)
        ang = ang + pull_gain * np.linspace(0, 1, n) * (pull - ang)
    xy = np.empty((n, 2), np.float32)
    xy[:, 0] = x0 + np.cumsum(np.cos(ang)) * step
    xy[:, 1] = y0 + np.cumsum(np.sin(ang)) * step
    return xy


# ----------------------------------------------------------------------------- anatomy
@dataclass
class _Anatomy:
    breast: np.ndarray      # bool (H, W) including the nipple
    dist: np.ndarray        # float32 (H, W) distance (px) from the skin outline (chest wall excluded)
    nipple_xy: tuple[float, float]
    axis: tuple[float, float]   # unit vector from nipple into the breast
    nipple: np.ndarray      # bool
    pectoral: np.ndarray    # bool (empty on CC)
    pect_dist: np.ndarray | None   # signed-ish distance (px) in front of the pectoral boundary (MLO)
    depth: float            # chest wall to nipple, px


def _anatomy(rng, view: str, breast: BreastSpec, shape) -> _Anatomy:
    """Breast outline, nipple, pectoral muscle and distance map in model space.

    The outline is an ellipse around a chest-wall point (different upper and lower semi-axes,
    tilted on MLO, low-order harmonic wobble), traced as a polyline and filled row by row.
    """
    h, w = shape
    size = float(np.clip(breast.size, 0, 1))
    a = w * (0.60 + 0.24 * size) * rng.uniform(0.97, 1.03)
    if view == "CC":
        yc = h / 2 + rng.uniform(-25, 25)
        b_top = h * (0.33 + 0.08 * size) * rng.uniform(0.95, 1.05)
        b_bot = h * (0.33 + 0.08 * size) * rng.uniform(0.95, 1.05)
        psi = np.deg2rad(rng.uniform(-4, 4))
    else:
        yc = h * rng.uniform(0.44, 0.50)
        b_top = h * (0.58 + 0.10 * size) * rng.uniform(0.95, 1.05)
        b_bot = h * (0.35 + 0.06 * size) * rng.uniform(0.95, 1.05)
        psi = np.deg2rad(rng.uniform(6, 14))  # the MLO breast droops: nipple points slightly down
    c, s = float(np.cos(psi)), float(np.sin(psi))
    th = np.linspace(-np.pi, np.pi, 4097)
    bb = np.where(np.sin(th) < 0, b_top, b_bot)
    radius = a * bb / np.sqrt((bb * np.cos(th)) ** 2 + (a * np.sin(th)) ** 2)
    wobble = np.ones_like(th)
    for k in range(2, 6):
        wobble += rng.normal(0, 0.022 / (k - 1)) * np.cos(k * th + rng.uniform(0, 2 * np.pi))
    # the harmonics must not move the nipple tip: damp them near theta = 0
    radius *= 1 + (wobble - 1) * (1 - np.exp(-(th / 0.35) ** 2))
    ub, vb = radius * np.cos(th), radius * np.sin(th)
    xb, yb = ub * c - vb * s, yc + ub * s + vb * c
    i_top, i_bot = int(np.argmin(yb)), int(np.argmax(yb))
    front = np.arange(i_top, i_bot + 1)
    back = np.r_[np.arange(i_bot, xb.size), np.arange(0, i_top + 1)][::-1]
    rows = np.arange(h, dtype=np.float64)
    x_front = np.interp(rows, np.maximum.accumulate(yb[front]), xb[front], left=-1.0, right=-1.0)
    x_back = np.interp(rows, np.maximum.accumulate(yb[back]), xb[back], left=1e9, right=1e9)
    cols = np.arange(w, dtype=np.float32)[None, :]
    body = (cols < x_front[:, None]) & (cols >= x_back[:, None])

    # nipple: a small bump at the tip of the outline, in profile (computed in a local window)
    tip_r = a  # radius at theta = 0 equals a (wobble damped there)
    nx, ny = tip_r * c, yc + tip_r * s
    n_along = rng.uniform(18, 26)   # protrusion, px (3.6-5.2 mm)
    n_across = rng.uniform(26, 38)
    bx, by = nx - 6 * c, ny - 6 * s
    bump = np.zeros((h, w), bool)
    nipple = np.zeros((h, w), bool)
    x0, x1 = max(0, int(bx - 45)), min(w, int(bx + 45))
    y0, y1 = max(0, int(by - 45)), min(h, int(by + 45))
    wy, wx = np.ogrid[y0:y1, x0:x1]
    pu = (wx - bx) * c + (wy - by) * s
    pv = -(wx - bx) * s + (wy - by) * c
    bump[y0:y1, x0:x1] = (pu / n_along) ** 2 + (pv / n_across) ** 2 < 1.0
    full = body | bump
    nipple[y0:y1, x0:x1] = bump[y0:y1, x0:x1] & ((pu > -4) | ~body[y0:y1, x0:x1])
    nipple_xy = (float(bx + n_along * c), float(by + n_along * s))

    # exact distance to the skin outline; the image border (chest wall, MLO top) is not skin
    dist = np.zeros((h, w), np.float32)
    r_any = np.flatnonzero(full.any(axis=1))
    c_max = int(np.flatnonzero(full.any(axis=0))[-1]) + 2
    r0, r1 = int(r_any[0]), int(r_any[-1]) + 1
    sub = full[max(0, r0 - 1):min(h, r1 + 1), :min(w, c_max)]
    dist[max(0, r0 - 1):min(h, r1 + 1), :min(w, c_max)] = ndimage.distance_transform_edt(sub)

    pectoral = np.zeros((h, w), bool)
    pect_dist = None
    if view == "MLO":
        top_cols = np.flatnonzero(full[0])
        x_top = float(top_cols[-1]) if top_cols.size else 0.3 * w
        xt = x_top * rng.uniform(0.55, 0.78)
        yl = h * rng.uniform(0.40, 0.56)
        p = rng.uniform(0.8, 1.0)
        yy = np.arange(h, dtype=np.float32)[:, None]
        xb_p = (xt * (1 - np.clip(yy / yl, 0, 1)) ** p).astype(np.float32)
        pectoral = (cols < xb_p) & (yy < yl) & full
        # distance in front of the boundary, measured horizontally (cheap, good enough for fades)
        below = np.sqrt(cols * cols + (yy - yl) ** 2)
        pect_dist = np.where(yy < yl, cols - xb_p, below).astype(np.float32)
    return _Anatomy(full, dist, nipple_xy, (-c, -s), nipple, pectoral, pect_dist, float(tip_r))


# ----------------------------------------------------------------------------- findings
def _place(rng, spec: FindingSpec, view: str, anat: _Anatomy, extent: float, taken) -> tuple[float, float]:
    """Centre of a lesion: at the spec's nipple distance, the angle nearest the preferred one
    that keeps the whole lesion (radius ``extent`` px) inside the breast, off the pectoral muscle
    and away from lesions already placed (``taken``: list of (x, y, r)).

    Candidates are tried in order: the given distance first (angles by closeness to the preferred
    one), then shorter distances; then the same with only the lesion core required to fit; last,
    the candidate deepest inside the breast. Never fails, so a plan always renders.
    """
    h, w = anat.breast.shape
    d_px = spec.nipple_distance_mm / PIXEL_SPACING_MM
    pref = np.deg2rad(spec.angle_cc_deg if view == "CC" else spec.angle_mlo_deg)
    ax, ay = anat.axis
    nx, ny = anat.nipple_xy
    offsets = np.deg2rad(np.arange(0, 85, 2.5))
    phis = np.concatenate([[pref], (pref + offsets[1:, None] * np.array([1, -1])).ravel()])
    shrink = np.array([1.0, 0.92, 0.84, 0.76, 0.68, 0.6, 0.5, 0.4, 0.3])
    d = (d_px * shrink)[:, None]                                   # (S, 1) x (1, A) -> (S, A)
    cx = (nx + d * (np.cos(phis) * ax - np.sin(phis) * ay)).ravel()
    cy = (ny + d * (np.cos(phis) * ay + np.sin(phis) * ax)).ravel()
    xi = np.clip(np.rint(cx).astype(int), 0, w - 1)
    yi = np.clip(np.rint(cy).astype(int), 0, h - 1)
    in_img = (cx >= 0) & (cx < w) & (cy >= 0) & (cy < h)
    depth = np.where(in_img, anat.dist[yi, xi], 0.0)
    ring = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    sep = np.full(cx.shape, np.inf)
    for tx, ty, tr in taken:
        sep = np.minimum(sep, np.hypot(cx - tx, cy - ty) - tr)
    core = extent / {"mass": 2.7 if spec.margin == "spiculated" else 1.25}.get(spec.kind, 1.0)
    for need in (extent, core * 1.1):
        px = np.clip(np.rint(cx[:, None] + (need + 8) * np.cos(ring)).astype(int), 0, w - 1)
        py = np.clip(np.rint(cy[:, None] + (need + 8) * np.sin(ring)).astype(int), 0, h - 1)
        ok = (in_img & (depth >= need + 15) & ~anat.pectoral[py, px].any(axis=1)
              & (cx >= need + 20) & (sep >= need + 20))
        if ok.any():
            i = int(np.argmax(ok))
            return float(cx[i]), float(cy[i])
    score = np.where(in_img & ~anat.pectoral[yi, xi], depth + np.minimum(sep, 1e4) * 1e-3, -np.inf)
    i = int(np.argmax(score))
    return float(cx[i]), float(cy[i])


def _extent_px(spec: FindingSpec) -> float:
    """Radius (px) of the disc that contains the whole lesion."""
    r = spec.size_mm / 2 / PIXEL_SPACING_MM
    if spec.kind == "mass":
        return r * {"spiculated": 2.7, "obscured": 2.1}.get(spec.margin, 1.25)
    if spec.kind == "distortion":
        return r * 1.05
    return r * 1.2


def _view_rotation(lrng, view: str) -> tuple[float, float]:
    """In-plane rotation (radians) and foreshortening of a lesion in this view."""
    rot = lrng.uniform(0, np.pi)
    mlo_extra = lrng.uniform(-0.5, 0.5)
    squash = lrng.uniform(0.85, 1.0)
    return (rot, 1.0) if view == "CC" else (rot + mlo_extra, squash)


def _spicules(lrng, n, r0, length, width, rot, wiggle=0.025):
    """Spicules: radial, slightly curved lines starting ``r0`` px from the centre.

    Returns a list of (path (N, 2) xy offsets, radius (N,), amplitude (N,)); both taper outwards.
    """
    out = []
    base = np.linspace(0, 2 * np.pi, n, endpoint=False) + lrng.uniform(0, 2 * np.pi)
    angles = base + lrng.normal(0, 0.7 * np.pi / n, n) + rot
    lens = length * lrng.uniform(0.35, 1.0, n)
    widths = width * lrng.uniform(0.6, 1.0, n)
    for ang, ln, wd in zip(angles, lens, widths):
        path = _curve(lrng, (r0 * np.cos(ang), r0 * np.sin(ang)), ang, ln, step=0.5, wiggle=wiggle)
        t = np.linspace(0.0, 1.0, len(path), dtype=np.float32)
        out.append((path, wd * (1 - 0.65 * t), 1 - 0.75 * t))
    return out


def _mass_geometry(lrng, spec, view):
    """The view-independent randomness of a mass, drawn in a fixed order from its own RNG."""
    r = spec.size_mm / 2 / PIXEL_SPACING_MM
    rot, squash = _view_rotation(lrng, view)
    aspect = {"round": lrng.uniform(1.0, 1.12), "oval": lrng.uniform(1.35, 1.8),
              "irregular": lrng.uniform(1.0, 1.4)}[spec.shape]
    harm_k = np.arange(2, 13)
    amp = {"round": 0.012, "oval": 0.015, "irregular": 0.085}[spec.shape] / np.sqrt(harm_k - 1)
    harm_a = lrng.normal(0, 1, harm_k.size) * amp
    harm_p = lrng.uniform(0, 2 * np.pi, harm_k.size)
    micro_k = np.arange(10, 18)
    micro_a = lrng.normal(0, 0.007, micro_k.size) * (spec.margin == "microlobulated")
    micro_p = lrng.uniform(0, 2 * np.pi, micro_k.size)
    spic = _spicules(lrng, int(lrng.integers(12, 26)), 0.85 * r, r * lrng.uniform(1.3, 1.9),
                     lrng.uniform(1.3, 2.2), rot, wiggle=0.012)
    return dict(r=r, rot=rot, squash=squash, aspect=aspect, harm=(harm_k, harm_a, harm_p),
                micro=(micro_k, micro_a, micro_p), spic=spic, obscured_dir=lrng.uniform(0, 2 * np.pi),
                contrast=lrng.uniform(0.6, 0.85), edge_px=lrng.uniform(5, 9))


def _render_mass(atten, boost, mask, lrng, spec, view, cx, cy):
    """Add a mass to ``atten`` (glandular units) and set its mask.

    An obscured margin is hidden by tissue: ``boost`` raises the local density logit on one side.
    """
    h, w = atten.shape
    geo = _mass_geometry(lrng, spec, view)
    r, rot = geo["r"], geo["rot"]
    ext = int(_extent_px(spec)) + 12
    x0, x1 = max(0, int(cx) - ext), min(w, int(cx) + ext + 1)
    y0, y1 = max(0, int(cy) - ext), min(h, int(cy) + ext + 1)
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    dx, dy = xx - cx, yy - cy
    cr, sr = np.cos(rot), np.sin(rot)
    u = (dx * cr + dy * sr) / (geo["aspect"] * geo["squash"])
    v = -dx * sr + dy * cr
    theta = np.arctan2(v, u)[None]
    bound = np.ones(theta.shape[1:], np.float32)
    for k, a, p in (geo["harm"], geo["micro"]):
        bound = bound + (a[:, None, None] * np.cos(k[:, None, None] * theta + p[:, None, None])).sum(0)
    rho = np.sqrt(u * u + v * v) / (r * bound / np.sqrt(geo["aspect"]))
    core = np.clip(1 - rho ** 2, 0, 1)
    if spec.margin == "indistinct":
        # the margin fades into the tissue over a few millimetres
        dome = _sigmoid((1 - rho) * r / geo["edge_px"] * 2.2) * (0.6 + 0.4 * core ** 0.5)
    elif spec.margin == "spiculated" or spec.shape == "irregular":
        dome = core ** 0.5
    else:
        dome = core ** 0.35   # compressed: a plateau with a steep rim
    contrast = geo["contrast"]
    if spec.margin == "obscured":
        # part of the margin is hidden by overlapping fibroglandular tissue
        side = np.clip(np.cos(np.arctan2(dy, dx) - geo["obscured_dir"]), 0, None) ** 0.7
        cover = side * np.exp(-(np.clip(rho - 0.6, 0, None) / 0.45) ** 2)
        boost[y0:y1, x0:x1] = np.maximum(boost[y0:y1, x0:x1], 3.5 * cover)
        soft = _sigmoid((1 - rho) * r / geo["edge_px"] * 2.2) * (0.6 + 0.4 * core ** 0.5)
        dome = dome * (1 - side) + soft * side
        contrast *= 0.75
    local = rho < 1.0
    if spec.margin == "spiculated":
        # spicules grow out of the margin: the mass body hides the part of them inside it
        sub = np.zeros_like(dome)
        smask = np.zeros(dome.shape, bool)
        for path, width, amp in geo["spic"]:
            _stamp(sub, path[:, 0] + cx - x0, path[:, 1] + cy - y0, width, 0.55 * amp, mask=smask)
        dome = np.maximum(dome, sub)
        local |= ndimage.binary_dilation(smask, iterations=1)
    atten[y0:y1, x0:x1] += contrast * dome
    mask[y0:y1, x0:x1] |= local


def _render_distortion(g, atten, mask, lrng, spec, view, cx, cy):
    """Architectural distortion: radiating spiculations without a central mass, tissue pulled in."""
    h, w = atten.shape
    rr = spec.size_mm / 2 / PIXEL_SPACING_MM
    rot, _ = _view_rotation(lrng, view)
    n = int(lrng.integers(9, 16))
    spic = _spicules(lrng, n, 3.0, rr, lrng.uniform(0.9, 1.4), rot, wiggle=0.02)
    ext = int(_extent_px(spec)) + 12
    x0, x1 = max(0, int(cx) - ext), min(w, int(cx) + ext + 1)
    y0, y1 = max(0, int(cy) - ext), min(h, int(cy) + ext + 1)
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    dx, dy = xx - cx, yy - cy
    d = np.sqrt(dx * dx + dy * dy) + 1e-3
    # retraction: sample the tissue from further out, so structures converge on the centre
    pull = 0.4 * rr * np.exp(-(d / (0.7 * rr)) ** 2) * (1 - np.exp(-(d / 6) ** 2))
    sy, sx = yy + dy / d * pull, xx + dx / d * pull
    g[y0:y1, x0:x1] = ndimage.map_coordinates(g, [sy, sx], order=1, mode="nearest")
    sub = np.zeros((y1 - y0, x1 - x0), np.float32)
    smask = np.zeros(sub.shape, bool)
    for path, width, amp in spic:
        _stamp(sub, path[:, 0] + cx - x0, path[:, 1] + cy - y0, width, 0.4 * amp, mask=smask)
    atten[y0:y1, x0:x1] += sub
    # the finding region: the star of spicules, filled
    theta = np.arctan2(dy, dx)
    ends = np.array([[np.arctan2(p[-1, 1], p[-1, 0]), np.hypot(p[-1, 0], p[-1, 1])] for p, _, _ in spic])
    order = np.argsort(ends[:, 0])
    reach = np.interp(theta, ends[order, 0], ends[order, 1], period=2 * np.pi)
    region = (d < 0.9 * reach) | ndimage.binary_dilation(smask, iterations=1)
    mask[y0:y1, x0:x1] |= region


def _render_calcs(calc_img, particles, mask, lrng, spec, view, cx, cy):
    """Calcification cluster: particles placed in 3-D (shared by both views) and projected."""
    h, w = calc_img.shape
    rr = spec.size_mm / 2 / PIXEL_SPACING_MM
    coarse = spec.morphology == "coarse"
    n = int(lrng.integers(3, 8)) if coarse else int(lrng.integers(15, 40))
    if spec.distribution == "linear":
        # along a duct: mostly in the image planes, so the line shows in both views
        n = n // 2
        t = lrng.uniform(-1, 1, n)
        direction = lrng.normal(0, 1, 3) * np.array([1.0, 1.0, 0.35])
        direction /= np.linalg.norm(direction)
        pts = t[:, None] * direction[None, :] * rr + lrng.normal(0, 0.08 * rr, (n, 3))
    else:
        pts = lrng.normal(0, 0.5 * rr, (n, 3))
        pts = pts / np.maximum(1, np.linalg.norm(pts, axis=1, keepdims=True) / rr)
    # CC projects out z (cranio-caudal), MLO at ~45 degrees between y and z
    if view == "CC":
        px, py = pts[:, 0], pts[:, 1]
    else:
        px, py = pts[:, 0], 0.72 * pts[:, 1] + 0.69 * pts[:, 2]
    if coarse:
        sizes = lrng.uniform(2.5, 6.5, n)  # radius px: 1-2.6 mm diameter
        amps = lrng.uniform(0.8, 1.0, n)
        pop = lrng.random(n) < 0.4      # popcorn: clumps of a few discs
        xs, ys, rs, aa = [], [], [], []
        for i in range(n):
            k = 4 if pop[i] else 1
            jit = lrng.normal(0, 0.45 * sizes[i], (k, 2)) if k > 1 else np.zeros((1, 2))
            xs.extend(cx + px[i] + jit[:, 0])
            ys.extend(cy + py[i] + jit[:, 1])
            rs.extend([sizes[i] * (0.7 if k > 1 else 1.0)] * k)
            aa.extend([amps[i]] * k)
        _stamp(calc_img, xs, ys, rs, aa, mask=particles)
    else:
        # fine pleomorphic: tiny, of varied size and shape (each a short chain of 1-3 sub-pixel dots)
        xs, ys, rs, aa = [], [], [], []
        for i in range(n):
            k = int(lrng.integers(1, 4))
            ang = lrng.uniform(0, np.pi)
            steps = np.arange(k) - (k - 1) / 2
            xs.extend(cx + px[i] + steps * 1.1 * np.cos(ang))
            ys.extend(cy + py[i] + steps * 1.1 * np.sin(ang))
            rs.extend(lrng.uniform(1.0, 2.2, k))
            aa.extend(lrng.uniform(0.45, 0.85, k) * np.ones(k))
        _stamp(calc_img, xs, ys, rs, aa, mask=particles, profile="gauss")
    # the cluster region: particles joined and closed (what a reader outlines)
    ext = int(rr * 1.3) + 20
    x0, x1 = max(0, int(cx) - ext), min(w, int(cx) + ext + 1)
    y0, y1 = max(0, int(cy) - ext), min(h, int(cy) + ext + 1)
    local = particles[y0:y1, x0:x1].copy()
    yy, xx = np.mgrid[y0:y1, x0:x1]
    near = np.hypot(xx - cx, yy - cy) < rr * 1.25 + 10
    local &= near
    region = ndimage.binary_dilation(local, structure=_disk(7))
    region = ndimage.binary_closing(region, structure=_disk(9), border_value=0)
    region = ndimage.binary_fill_holes(region)
    mask[y0:y1, x0:x1] |= region


def _disk(r: int) -> np.ndarray:
    y, x = np.mgrid[-r:r + 1, -r:r + 1]
    return x * x + y * y <= r * r


# ----------------------------------------------------------------------------- the image
def generate_image(rng: np.random.Generator, laterality: str, view: str, findings_spec=(),
                   density: str | None = None, *, breast: BreastSpec | None = None,
                   shape: tuple[int, int] = SHAPE) -> SyntheticImage:
    """One synthetic mammogram in model space (chest wall left), with exact masks.

    rng            drives everything view-specific (texture, outline, vessels, placement)
    laterality     "L" | "R" (only affects ``to_file``: model space is the same for both)
    view           "CC" | "MLO"
    findings_spec  FindingSpec list; each lesion's own shape comes from its spec.seed
    density        BI-RADS category name (overrides breast.density)
    Returns SyntheticImage with pixels uint16 (H, W) in 0..4095. ~0.2 s on one core.
    The steps below draw from ``rng`` in a fixed order, so a seed always gives the same image.
    """
    if view not in VIEWS or laterality not in LATERALITIES:
        raise ValueError(f"view must be one of {VIEWS} and laterality one of {LATERALITIES}")
    breast = breast or BreastSpec(size=float(rng.uniform(0.2, 0.9)), density=density or "scattered")
    density = density or breast.density
    if density not in DENSITIES:
        raise ValueError(f"density must be one of {DENSITIES}")
    anat = _anatomy(rng, view, breast, shape)
    inside = anat.breast
    logit, n_tex = _gland_logit(rng, anat, view, density, shape)
    lesions = _place_findings(rng, findings_spec, view, anat, shape)
    g = _sigmoid(logit + lesions.boost).astype(np.float32)
    g *= inside
    for lrng, spec, cx, cy, fmask in lesions.later:
        _render_distortion(g, lesions.atten, fmask, lrng, spec, view, cx, cy)
    for f in lesions.findings:
        f.mask &= inside & ~anat.pectoral
    vessel_amp, vessel_mask = _vessels(rng, anat, shape)

    # --- Cooper's ligaments: thin curved lines (zero crossings of a smooth field) in the fat
    n2 = power_noise(rng, shape, 4.2, stretch=1.3)
    ligament = (np.exp(-(n2 / 0.05) ** 2) * (1 - g) * _smoothstep(anat.dist, 8, 30)
                * (1 - 0.7 * _smoothstep(anat.dist, 60, 200)) * inside)

    # fat is not flat: a faint copy of the texture gives lobular mottle
    # vessels add density, but overlying glandular tissue hides most of their contrast
    tissue = g + 0.08 * n_tex * inside + 0.14 * vessel_amp * (1 - 0.5 * g) + 0.08 * ligament + lesions.atten
    pixels, skin_w = _compose(rng, tissue, lesions.calc, anat, view, shape)
    masks = _structure_masks(anat, g, vessel_mask, lesions, skin_w, view)
    return SyntheticImage(laterality, view, pixels, masks, lesions.findings, anat.nipple_xy, density)


def _gland_logit(rng, anat: _Anatomy, view: str, density: str, shape) -> tuple[np.ndarray, np.ndarray]:
    """Fibroglandular tissue as a logit field (H, W): 1/f^3 texture, soft-thresholded inside an envelope.

    Two fields: an isotropic one (the lumpy "cloud") and one generated in polar coordinates
    around the nipple and stretched radially, so strands and ducts converge on the nipple.
    Returns (logit, texture) float32 (H, W).
    """
    h, w = shape
    ax, ay = anat.axis
    nx, ny = anat.nipple_xy
    yy = np.arange(h, dtype=np.float32)[:, None]
    xx = np.arange(w, dtype=np.float32)[None, :]
    n1 = power_noise(rng, shape, 3.0, stretch=1.3)
    rel_x, rel_y = xx - np.float32(nx), yy - np.float32(ny)
    along = rel_x * np.float32(ax) + rel_y * np.float32(ay)      # px behind the nipple
    across = -rel_x * np.float32(ay) + rel_y * np.float32(ax)    # px off the nipple axis
    r_n = np.sqrt(along * along + across * across)
    phi = np.arctan2(across, along)
    phi *= np.float32(1024 / (np.pi + 1.0))
    phi += 512
    polar = power_noise(rng, (1024, 1024), 3.0, stretch=3.0, angle=np.pi / 2)
    strands = ndimage.map_coordinates(polar, [r_n, phi], order=1, mode="grid-wrap")
    del phi
    # the strands converge on the nipple; fade them in so the subareolar region is not a broom
    w_s = 0.72 * _smoothstep(r_n, 40, 220)
    n_tex = np.sqrt(1 - w_s * w_s) * n1 + w_s * strands
    cone = 0.10 * h + 0.75 * np.clip(along, 0, None)          # the gland widens away from the nipple
    envelope = _smoothstep(anat.dist, 20, 95) * (0.35 + 0.65 * np.exp(-(across / np.minimum(cone, 0.42 * h)) ** 2))
    if view == "CC":
        envelope *= _smoothstep(xx, 25, 130)               # retromammary fat at the chest wall
    else:
        envelope *= _smoothstep(anat.pect_dist, 10, 110)   # fat plane in front of the pectoral
    return (n_tex + _DENSITY_OFFSET[density] - 2.6 * (1 - envelope)) / 0.55, n_tex


@dataclass
class _Lesions:
    """The findings of one image, rendered into their own layers (H, W)."""

    findings: list[Finding]
    atten: np.ndarray      # mass/spicule attenuation, glandular units
    boost: np.ndarray      # logit added where tissue hides an obscured margin
    calc: np.ndarray       # calcification attenuation, 0..1
    particles: np.ndarray  # bool: calcification particles
    later: list            # distortions: (rng, spec, cx, cy, mask), rendered once the tissue exists


def _place_findings(rng, findings_spec, view: str, anat: _Anatomy, shape) -> _Lesions:
    """Place every finding, then render masses and calcifications; distortions warp the tissue after."""
    h, w = shape
    out = _Lesions([], np.zeros((h, w), np.float32), np.zeros((h, w), np.float32), np.zeros((h, w), np.float32),
                   np.zeros((h, w), bool), [])
    taken: list[tuple[float, float, float]] = []
    for i, spec in enumerate(findings_spec):
        lrng = np.random.default_rng(spec.seed)
        ext = _extent_px(spec)
        cx, cy = _place(rng, spec, view, anat, ext, taken)
        taken.append((cx, cy, ext))
        fmask = np.zeros((h, w), bool)
        if spec.kind == "mass":
            _render_mass(out.atten, out.boost, fmask, lrng, spec, view, cx, cy)
        elif spec.kind == "calcification":
            _render_calcs(out.calc, out.particles, fmask, lrng, spec, view, cx, cy)
        else:
            out.later.append((lrng, spec, cx, cy, fmask))
        out.findings.append(Finding(spec, fmask, (cx, cy), index=i))
    return out


def _vessels(rng, anat: _Anatomy, shape) -> tuple[np.ndarray, np.ndarray]:
    """Tortuous vessels from the chest wall towards the nipple: (amplitude float32, mask bool) (H, W)."""
    h, w = shape
    nx, ny = anat.nipple_xy
    inside = anat.breast
    vessel_amp = np.zeros((h, w), np.float32)
    vessel_mask = np.zeros((h, w), bool)
    for _ in range(int(rng.integers(2, 6))):
        for _try in range(20):
            sx = rng.uniform(5, 0.25 * anat.depth)
            sy = ny + rng.uniform(-0.9, 0.9) * 0.38 * h
            if 0 <= sy < h and inside[int(sy), int(sx)] and not anat.pectoral[int(sy), int(sx)]:
                break
        target = np.arctan2(ny + rng.normal(0, 0.15 * h) - sy, nx - sx)
        length = rng.uniform(0.45, 0.9) * anat.depth
        path = _curve(rng, (sx, sy), target + rng.normal(0, 0.15), length, step=0.7, wiggle=0.014,
                      pull=(target, 0.7))
        r0 = rng.uniform(3.0, 5.5)
        radii = r0 * np.linspace(1.0, 0.45, len(path), dtype=np.float32)
        keep = (path[:, 0] >= 0) & (path[:, 0] < w) & (path[:, 1] >= 0) & (path[:, 1] < h)
        path, radii = path[keep], radii[keep]
        xi, yi = path[:, 0].astype(int), path[:, 1].astype(int)
        ok = anat.dist[yi, xi] > 12
        if not ok.any():
            continue
        stop = int(np.argmin(ok)) if not ok.all() else ok.size
        _stamp(vessel_amp, path[:stop, 0], path[:stop, 1], radii[:stop], 1.0, mask=vessel_mask, profile="gauss")
    vessel_mask &= inside & ~anat.pectoral
    return vessel_amp, vessel_mask


def _compose(rng, tissue: np.ndarray, calc: np.ndarray, anat: _Anatomy, view: str, shape) -> tuple[np.ndarray, float]:
    """Tissue (glandular units) -> stored values: tone-mapped, then the pectoral muscle (MLO),
    thickness, skin, calcifications and quantum noise. Returns (pixels uint16 (H, W), skin width px)."""
    h, w = shape
    inside, dist = anat.breast, anat.dist
    tissue = 1.25 * np.tanh(tissue / 1.25)
    fat_level = rng.uniform(1450, 1650)
    gland_level = rng.uniform(3050, 3300)
    value = fat_level + (gland_level - fat_level) * tissue
    if view == "MLO":
        # the muscle thickens away from its free border and towards the axilla; fibres run along it
        yy = np.arange(h, dtype=np.float32)[:, None]
        xx = np.arange(w, dtype=np.float32)[None, :]
        pect_level = fat_level + (gland_level - fat_level) * rng.uniform(0.42, 0.56)
        streak = power_noise(rng, shape, 3.0, stretch=5.0, angle=2.0)  # along the muscle fibres
        ramp = 0.8 + 0.2 * _smoothstep(-anat.pect_dist, 0, 150)
        pect = pect_level * ramp + 110 * streak + 100 * (1 - _smoothstep(xx + yy, 0, 600))
        del streak
        blend = _smoothstep(-anat.pect_dist, -2, 4)
        value = value * (1 - blend) + pect * blend
    edge_mm = rng.uniform(9, 13) / PIXEL_SPACING_MM
    thick = np.sqrt(1 - np.clip(1 - dist / edge_mm, 0, 1) ** 2)
    value = value * thick ** 0.45                       # partial peripheral equalisation
    skin_w = rng.uniform(6, 9)
    value += 420 * np.exp(-((dist - 0.35 * skin_w) / (0.35 * skin_w)) ** 2) * inside
    value = np.maximum(value, fat_level * 0.35 * thick) * inside
    value += calc * 1700 * inside
    # quantum noise inside (grows with signal); the air is 0, as in processed images
    value += rng.standard_normal((h, w), dtype=np.float32) * (9 + 0.005 * value)
    value *= inside
    return np.clip(np.rint(value), 0, MAX_VALUE).astype(np.uint16), skin_w


def _structure_masks(anat: _Anatomy, g: np.ndarray, vessel_mask: np.ndarray, lesions: _Lesions, skin_w: float,
                     view: str) -> dict[str, np.ndarray]:
    """The exact (H, W) bool masks of the breast, its normal structures and the calcification particles."""
    inside = anat.breast
    lesion_any = np.zeros(inside.shape, bool)
    for f in lesions.findings:
        lesion_any |= f.mask
    skin = inside & (anat.dist < skin_w)
    fibro = (g > 0.5) & inside & ~anat.pectoral & ~skin
    masks = {
        "breast": inside,
        "skin": skin,
        "nipple": anat.nipple,
        "vessel": vessel_mask,
        "fibroglandular": fibro,
        "fat": inside & ~fibro & ~anat.pectoral & ~skin & ~vessel_mask & ~anat.nipple & ~lesion_any,
        "calcification": lesions.particles & inside,
    }
    if view == "MLO":
        masks["pectoral-muscle"] = anat.pectoral
    return masks


# ----------------------------------------------------------------------------- the case
def _case_rng(seed: int, case_index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(case_index), 0x5EED])


def _image_rng(seed: int, case_index: int, laterality: str, view: str) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(case_index), LATERALITIES.index(laterality),
                                  VIEWS.index(view)])


def _draw_finding(rng, pathology: str, breast: BreastSpec) -> FindingSpec:
    """One finding of the requested pathology, with BI-RADS-consistent descriptors."""
    depth_mm = SHAPE[1] * (0.60 + 0.24 * breast.size) * PIXEL_SPACING_MM
    common = dict(nipple_distance_mm=float(rng.uniform(0.28, 0.62) * depth_mm),
                  angle_cc_deg=float(rng.uniform(-40, 40)), angle_mlo_deg=float(rng.uniform(-40, 40)),
                  seed=int(rng.integers(2**31)))
    u = rng.random()
    if pathology == "benign":
        if u < 0.40:
            return FindingSpec("mass", float(rng.uniform(8, 20)), shape=str(rng.choice(["round", "oval"])),
                               margin="circumscribed", **common)
        if u < 0.58:
            return FindingSpec("mass", float(rng.uniform(10, 22)), shape="oval", margin="obscured", **common)
        return FindingSpec("calcification", float(rng.uniform(8, 18)), morphology="coarse",
                           distribution="grouped", **common)
    if u < 0.34:
        return FindingSpec("mass", float(rng.uniform(10, 24)), shape="irregular", margin="spiculated", **common)
    if u < 0.46:
        return FindingSpec("mass", float(rng.uniform(10, 22)), shape="irregular", margin="indistinct", **common)
    if u < 0.54:
        return FindingSpec("mass", float(rng.uniform(8, 16)), shape=str(rng.choice(["round", "oval"])),
                           margin="microlobulated", **common)
    if u < 0.86:
        return FindingSpec("calcification", float(rng.uniform(6, 14)), morphology="fine-pleomorphic",
                           distribution=str(rng.choice(["grouped", "linear"], p=[0.65, 0.35])), **common)
    return FindingSpec("distortion", float(rng.uniform(16, 28)), **common)


_LABEL_BLOCK = np.array(["normal"] * 4 + ["benign"] * 3 + ["malignant"] * 3)


def case_id_for(seed: int, case_index: int) -> str:
    """Stable case id of the synthetic case ``case_index`` of the set with ``seed``."""
    return f"syn{int(seed)}-{int(case_index):04d}"


def plan_case(seed: int, case_index: int, *, label: str | None = None) -> SyntheticCase:
    """The case without pixels: label, breasts, densities and finding specs (cheap, deterministic).

    Mix: 40% normal, 30% benign, 30% malignant (exact in every block of ten consecutive indices);
    ~25% of cases show both breasts.
    """
    rng = _case_rng(seed, case_index)
    # labels are dealt in shuffled blocks of ten (4 normal, 3 benign, 3 malignant), so any run of
    # cases has the intended mix, and each case still depends on (seed, case_index) alone
    block = np.random.default_rng([int(seed), int(case_index) // 10, 0xB10C]).permutation(_LABEL_BLOCK)
    target = label or str(block[int(case_index) % 10])
    both = rng.random() < 0.25
    first = str(rng.choice(LATERALITIES))
    lats = ["L", "R"] if both else [first]
    density = str(rng.choice(DENSITIES, p=[0.12, 0.40, 0.36, 0.12]))
    size = float(rng.uniform(0.15, 0.95))
    breasts = {lat: BreastSpec(size=float(np.clip(size + rng.normal(0, 0.03), 0, 1)), density=density)
               for lat in lats}
    findings: dict[str, list[FindingSpec]] = {lat: [] for lat in lats}
    if target != "normal":
        lesion_lat = first
        specs = [_draw_finding(rng, target, breasts[lesion_lat])]
        if target == "malignant" and rng.random() < 0.2:
            specs.append(_draw_finding(rng, "benign", breasts[lesion_lat]))
        elif target == "benign" and rng.random() < 0.15:
            specs.append(_draw_finding(rng, "benign", breasts[lesion_lat]))
        findings[lesion_lat] = specs
    all_specs = [s for specs in findings.values() for s in specs]
    return SyntheticCase(case_id=case_id_for(seed, case_index), seed=int(seed), index=int(case_index),
                         label=label_from_findings(all_specs), breasts=breasts, findings=findings)


def generate_case(seed: int, case_index: int, *, label: str | None = None,
                  shape: tuple[int, int] = SHAPE) -> SyntheticCase:
    """A synthetic case with its images rendered (CC + MLO of each breast in the plan).

    Deterministic in (seed, case_index); each image has its own RNG stream, so images can be
    rendered in any order or process. ``label`` forces normal | benign | malignant.
    """
    case = plan_case(seed, case_index, label=label)
    for lat, breast in case.breasts.items():
        for view in VIEWS:
            rng = _image_rng(seed, case_index, lat, view)
            case.images.append(generate_image(rng, lat, view, case.findings[lat], breast.density,
                                              breast=breast, shape=shape))
    return case
