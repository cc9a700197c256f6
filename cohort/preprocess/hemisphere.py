"""Hemisphere separation: the midsagittal plane of a head CT, and left/right masks from it.

Two planes are estimated from the skull on a block-mean volume of about 3 mm voxels (a
512 x 512 x 300 series takes about half a second on one core):

* the **paper plane** (DST paper, Algorithm 1): threshold the skull, keep the largest
  connected component, fill its holes slice by slice and take the centroid; the plane
  passes through the centroid with its normal along the DICOM row direction
  (ImageOrientationPatient[:3], the grid's column step);
* the **symmetric plane**: the plane about which the skull is most nearly mirror-symmetric.
  It maximises the correlation of the (smoothed) bone density near the skull with its own
  reflection, over the in-plane angle (yaw), the out-of-plane angle (roll) and the offset
  of the plane, by a coarse search around the paper plane refined by Nelder-Mead. It
  follows a head that is turned or tilted in the scanner; the paper plane does not.

Which plane is used (`choose_plane`): the symmetric plane when its fit converged, it is
plausible (within ``max_angle_deg`` and ``max_offset_mm`` of the paper plane, symmetry
score at least ``min_score``) and it is clearly more symmetric (score gain at least
``min_gain``); the paper plane otherwise. The result records which one and why.

Sides: every normal points to the patient's left (LPS +x, ``normal[0] > 0``), so a
positive signed distance is the patient's left. A voxel centre exactly on the plane counts
as left.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import (
    binary_dilation,
    binary_fill_holes,
    gaussian_filter,
    label,
    map_coordinates,
)
from scipy.optimize import minimize

from cohort.errors import ConfigError, ErrorCode, SeriesError
from cohort.geometry import Grid
from cohort.read.volume import Volume

logger = logging.getLogger(__name__)

PAPER = "paper"
SYMMETRIC = "symmetric"

#: a volume without a skull is no head CT this stage can split
NO_SKULL = ErrorCode.NO_SKULL


@dataclass(frozen=True)
class HemisphereConfig:
    """How the midsagittal plane is found and chosen."""

    bone_hu: float = 300.0  # skull threshold: diploe is ~300-700 HU, cortical bone >1000
    bone_cap_hu: float = 1500.0  # CT numbers are clipped to [0, this]: metal does not dominate
    working_mm: float = 3.0  # voxel size of the downsampled (block-mean) volume
    min_skull_ml: float = 30.0  # a smaller largest bone component is not a skull
    smooth_mm: float = 3.0  # Gaussian sigma on the bone density: a smooth symmetry score
    search_yaw_deg: float = 20.0  # coarse search range of the in-plane angle (+-)
    search_roll_deg: float = 10.0  # ... of the out-of-plane angle (+-)
    search_offset_mm: float = 6.0  # ... of the offset from the skull centroid (+-)
    max_angle_deg: float = 25.0  # a symmetric plane farther from the paper plane is rejected
    max_offset_mm: float = 20.0  # ... or farther from its centroid
    min_score: float = 0.7  # a symmetric plane less symmetric than this is rejected
    # score gain over the paper plane needed to prefer the symmetric plane; on the synthetic
    # heads a yaw of 1 deg gains about 0.002, 3 deg 0.02, 8 deg 0.1
    min_gain: float = 0.002

    def __post_init__(self) -> None:
        for name in ("working_mm", "smooth_mm", "search_yaw_deg", "search_roll_deg",
                     "search_offset_mm", "max_angle_deg", "max_offset_mm"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"HemisphereConfig.{name} must be > 0, got "
                                  f"{getattr(self, name)!r}")
        if not 0 < self.bone_hu < self.bone_cap_hu:
            raise ConfigError("HemisphereConfig needs 0 < bone_hu < bone_cap_hu, got "
                              f"{self.bone_hu!r} and {self.bone_cap_hu!r}")


@dataclass(frozen=True)
class MidlinePlane:
    """A plane in LPS world coordinates (mm). ``normal`` is normalised on construction and
    oriented to the patient's left (``normal[0] > 0``)."""

    point: tuple[float, float, float]
    normal: tuple[float, float, float]

    def __post_init__(self) -> None:
        n = np.asarray(self.normal, dtype=float)
        length = float(np.linalg.norm(n))
        if not length > 0 or abs(n[0]) < 1e-9 * length:
            raise ValueError(f"a midline normal needs a left-right component, got {self.normal}")
        n = n / length * np.sign(n[0])
        object.__setattr__(self, "normal", tuple(float(v) for v in n))
        object.__setattr__(self, "point", tuple(float(v) for v in self.point))

    def signed_distance(self, points_world) -> np.ndarray:
        """Distance (mm) of world points (..., 3) from the plane; positive on the left."""
        p = np.asarray(points_world, dtype=float) - np.asarray(self.point)
        return p @ np.asarray(self.normal)

    def side_of_voxels(self, grid: Grid, k, j, i) -> np.ndarray:
        """+1 (patient left) or -1 (right) for voxel indices on ``grid`` (int8, broadcast)."""
        d = self.signed_distance(grid.world(i, j, k))
        return np.where(d >= 0, 1, -1).astype(np.int8)

    def left_mask(self, grid: Grid, k_start: int = 0, k_stop: int | None = None) -> np.ndarray:
        """Boolean mask [k, j, i] of the voxels of slices ``k_start:k_stop`` whose centres
        lie on the left of the plane or on it: a half-space, not limited to the head."""
        nk, nj, ni = grid.shape
        k0, k1, _ = slice(k_start, k_stop).indices(nk)
        n = np.asarray(self.normal)
        # the signed distance is affine in (i, j, k): in-plane part once, then one offset
        # per slice, so no (k, j, i, 3) coordinate array is ever built
        d0 = float(n @ (np.asarray(grid.origin) - np.asarray(self.point)))
        in_plane = ((n @ np.asarray(grid.row_step)) * np.arange(nj))[:, None] \
            + ((n @ np.asarray(grid.col_step)) * np.arange(ni))[None, :]  # (J, I)
        per_slice = d0 + (n @ np.asarray(grid.slice_step)) * np.arange(k0, k1)  # (K,)
        return in_plane[None] >= -per_slice[:, None, None]

    def angle_to(self, other: MidlinePlane) -> float:
        """Angle between the two planes, degrees in [0, 90]."""
        c = abs(float(np.dot(self.normal, other.normal)))
        return float(np.degrees(np.arccos(min(1.0, c))))


@dataclass(frozen=True)
class HemisphereSplit:
    """The midsagittal planes of one volume and the one used to split it.

    Small by design (planes, scores, the grid): masks are made on demand by `masks`.
    ``angle_deg`` and ``offset_mm`` compare the symmetric plane with the paper plane:
    the angle between them, and the signed distance (positive to the left) of the
    symmetric plane from the paper plane's point, the skull centroid.
    """

    grid: Grid
    plane: MidlinePlane  # the plane used
    used: str  # PAPER or SYMMETRIC
    reason: str
    paper_plane: MidlinePlane
    symmetric_plane: MidlinePlane
    angle_deg: float
    offset_mm: float
    paper_score: float  # symmetry score in [0, 1]: 1 is a perfect mirror image
    symmetric_score: float
    converged: bool
    skull_ml: float  # volume of the skull component (working voxels above bone_hu)
    series_uid: str | None = None

    def masks(self, k_start: int = 0, k_stop: int | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
        """(left, right) boolean masks [k, j, i] of slices ``k_start:k_stop`` of the grid:
        complementary half-spaces by the plane used (intersect them with a calcium mask)."""
        left = self.plane.left_mask(self.grid, k_start, k_stop)
        return left, ~left

    def sides(self, k, j, i) -> np.ndarray:
        """+1 (left) or -1 (right) for voxel indices, by the plane used."""
        return self.plane.side_of_voxels(self.grid, k, j, i)

    def record(self) -> dict:
        """Flat values for the output tables."""
        return {
            "midline_used": self.used, "midline_reason": self.reason,
            "midline_angle_deg": self.angle_deg, "midline_offset_mm": self.offset_mm,
            "midline_paper_score": self.paper_score,
            "midline_symmetric_score": self.symmetric_score,
            "midline_converged": self.converged, "skull_ml": self.skull_ml,
            "midline_point": list(self.plane.point), "midline_normal": list(self.plane.normal),
        }


def split_hemispheres(volume: Volume, config: HemisphereConfig = HemisphereConfig()
                      ) -> HemisphereSplit:
    """Find the paper's and the symmetric midsagittal plane of a head CT and choose one.

    Raises:
        SeriesError: NOT_AXIAL when the row direction is not left-right; ``NO_SKULL`` when
            no bone component of at least ``config.min_skull_ml`` is found.
    """
    grid = volume.grid
    row_dir = np.asarray(grid.col_step, dtype=float)
    row_dir = row_dir / np.linalg.norm(row_dir)
    if abs(row_dir[0]) < 0.5:
        raise SeriesError(ErrorCode.NOT_AXIAL, "the image row direction "
                          f"{np.round(row_dir, 3).tolist()} is more than 60 deg from the "
                          "patient's left-right axis; hemispheres need axial images",
                          series=volume.series_uid)
    work_grid, hu = downsample(volume.array, grid, config)
    skull, skull_ml = _skull(work_grid, hu, config, volume.series_uid)
    filled = np.stack([binary_fill_holes(s) for s in skull])  # slice-wise, as the paper
    k, j, i = (float(v.mean()) for v in np.nonzero(filled))
    centroid = work_grid.world(i, j, k)  # the grid is affine: centroid of the indices
    paper = MidlinePlane(tuple(centroid), tuple(row_dir))

    # the symmetry feature: bone density on and next to the skull (not the head holder)
    near_skull = binary_dilation(skull, np.ones((3, 3, 3), bool))
    density = np.where(near_skull, hu / np.float32(config.bone_cap_hu), np.float32(0))
    sigma = [config.smooth_mm / s for s in work_grid.spacing[::-1]]  # (k, j, i) voxels
    score = _Symmetry(work_grid, gaussian_filter(density, sigma).astype(np.float32))
    fit = _fit(score, paper, config)
    symmetric = fit.plane
    angle = paper.angle_to(symmetric)
    offset = float(-symmetric.signed_distance(centroid))
    paper_score = score(paper)
    used, reason = choose_plane(converged=fit.converged, angle_deg=angle, offset_mm=offset,
                                paper_score=paper_score, symmetric_score=fit.score,
                                config=config)
    split = HemisphereSplit(
        grid=grid, plane=symmetric if used == SYMMETRIC else paper, used=used, reason=reason,
        paper_plane=paper, symmetric_plane=symmetric, angle_deg=angle, offset_mm=offset,
        paper_score=paper_score, symmetric_score=fit.score, converged=fit.converged,
        skull_ml=skull_ml, series_uid=volume.series_uid)
    logger.debug("series %s: %s plane (%s); %.2f deg, %.2f mm from the paper plane; "
                 "%d score evaluations", volume.series_uid, used, reason, angle, offset,
                 fit.evaluations)
    return split


def choose_plane(*, converged: bool, angle_deg: float, offset_mm: float, paper_score: float,
                 symmetric_score: float, config: HemisphereConfig) -> tuple[str, str]:
    """(PAPER or SYMMETRIC, why): the rule of this module's docstring."""
    c = config
    gain = symmetric_score - paper_score
    if not converged:
        return PAPER, "symmetry fit did not converge"
    if angle_deg > c.max_angle_deg:
        return PAPER, f"symmetric plane {angle_deg:.1f} deg off (> {c.max_angle_deg:g})"
    if abs(offset_mm) > c.max_offset_mm:
        return PAPER, f"symmetric plane {offset_mm:.1f} mm off (> {c.max_offset_mm:g})"
    if symmetric_score < c.min_score:
        return PAPER, f"skull not symmetric (score {symmetric_score:.3f} < {c.min_score:g})"
    if gain < c.min_gain:
        return PAPER, f"symmetric plane gains only {gain:.3f} (< {c.min_gain:g})"
    return SYMMETRIC, f"score {symmetric_score:.3f} vs {paper_score:.3f} for the paper plane"


def downsample(array: np.ndarray, grid: Grid, config: HemisphereConfig,
               slab: int = 4) -> tuple[Grid, np.ndarray]:
    """Block means of the CT numbers clipped to [0, ``bone_cap_hu``], in blocks of about
    ``working_mm``: the block grid and the means [k, j, i] (float32).

    Means, not thresholded shares, so that partial-volume information survives: a
    thresholded share is a staircase that matches its mirror image exactly only when the
    mirror plane is aligned with the voxel grid, which would pull the symmetric plane onto
    the grid. Partial blocks at the far edges count their missing voxels as 0.
    """
    fi, fj, fk = (max(1, int(round(config.working_mm / s))) for s in grid.spacing)
    nk, nj, ni = grid.shape
    nk2, nj2, ni2 = -(-nk // fk), -(-nj // fj), -(-ni // fi)
    sums = np.zeros((nk2, nj2, ni2), dtype=np.float32)
    for b0 in range(0, nk2, slab):  # slabs bound the memory of the temporaries
        b1 = min(nk2, b0 + slab)
        x = np.clip(array[b0 * fk:b1 * fk], 0.0, config.bone_cap_hu, dtype=np.float32)
        x = np.pad(x, ((0, (b1 - b0) * fk - len(x)), (0, nj2 * fj - nj), (0, ni2 * fi - ni)))
        # strided sums, one axis at a time: faster than a 6-d reshape-sum
        acc_i = np.zeros((len(x), nj2 * fj, ni2), dtype=np.float32)
        for d in range(fi):
            acc_i += x[:, :, d::fi]
        acc_j = np.zeros((len(x), nj2, ni2), dtype=np.float32)
        for d in range(fj):
            acc_j += acc_i[:, d::fj]
        for d in range(fk):
            sums[b0:b1] += acc_j[d::fk]
    sums /= np.float32(fi * fj * fk)
    c, r, s = (np.asarray(v, dtype=float) for v in (grid.col_step, grid.row_step,
                                                     grid.slice_step))
    origin = np.asarray(grid.origin) + (fi - 1) / 2 * c + (fj - 1) / 2 * r + (fk - 1) / 2 * s
    work = Grid(tuple(origin), tuple(c * fi), tuple(r * fj), tuple(s * fk), sums.shape)
    return work, sums


def _skull(grid: Grid, hu: np.ndarray, config: HemisphereConfig,
           series: str | None) -> tuple[np.ndarray, float]:
    """The largest 26-connected component above ``bone_hu`` and its volume (ml)."""
    labels, n = label(hu > config.bone_hu, structure=np.ones((3, 3, 3), bool))
    if n == 0:
        raise SeriesError(NO_SKULL, f"no {config.working_mm:g} mm block above "
                          f"{config.bone_hu:g} HU: no skull to split the hemispheres by; "
                          "is this a head CT in HU?", series=series)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    largest = int(np.argmax(sizes))
    skull_ml = float(sizes[largest]) * abs(float(np.linalg.det(grid.matrix))) / 1000.0
    if skull_ml < config.min_skull_ml:
        raise SeriesError(NO_SKULL, f"the largest bone component holds {skull_ml:.1f} ml "
                          f"(< {config.min_skull_ml:g} ml): no skull to split the "
                          "hemispheres by", series=series)
    return labels == largest, skull_ml


class _Symmetry:
    """Symmetry score of a plane: the normalised cross-correlation of a feature volume F
    with its reflection over (a subset of) F's support; 1 for a perfect mirror image.

    Normalised, because linear interpolation of F at the reflected points blurs it (less so
    where they fall on voxel centres): the plain overlap sum F(p) F(reflected p) would
    favour planes that map the grid onto itself, pulling the fit onto the grid axes.
    """

    def __init__(self, grid: Grid, feature: np.ndarray, points: np.ndarray | None = None,
                 weights: np.ndarray | None = None):
        self.grid = grid
        self.feature = feature
        if points is None:
            # the faint tails of the smoothing hold < 0.1% of the feature's energy
            k, j, i = np.nonzero(feature > 0.05 * float(feature.max()))
            weights = feature[k, j, i].astype(np.float64)
            points = grid.world(i, j, k)  # (N, 3)
        self.points, self.weights = points, weights
        self.norm = float(np.sum(weights * weights))
        self.origin = np.asarray(grid.origin, dtype=float)
        self.inv = np.linalg.inv(grid.matrix)
        self.evaluations = 0

    def thinned(self, max_points: int) -> _Symmetry:
        """The same score on every n-th point, at most about ``max_points`` of them."""
        step = max(1, -(-len(self.weights) // max_points))
        return _Symmetry(self.grid, self.feature, np.ascontiguousarray(self.points[::step]),
                         np.ascontiguousarray(self.weights[::step]))

    def __call__(self, plane: MidlinePlane) -> float:
        n = np.asarray(plane.normal)
        q = np.asarray(plane.point)
        # reflection p -> H p + 2 (q.n) n, then world -> fractional (i, j, k)
        h = np.eye(3) - 2.0 * np.outer(n, n)
        a = self.inv @ h
        b = self.inv @ (2.0 * float(q @ n) * n - self.origin)
        idx = _affine(self.points, a, b)  # (N, 3) as i, j, k
        values = map_coordinates(self.feature, idx[:, ::-1].T, order=1, mode="grid-constant",
                                 cval=0.0)
        self.evaluations += 1
        # elementwise sums, not BLAS dot products: threaded BLAS stalls on busy hosts
        energy = float(np.sum(values * values))
        if energy <= 0:
            return 0.0
        return float(np.sum(self.weights * values) / np.sqrt(self.norm * energy))


def _affine(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """p @ a.T + b for (N, 3) points, without BLAS (see `_Symmetry.__call__`)."""
    return p[:, :1] * a[:, 0] + p[:, 1:2] * a[:, 1] + p[:, 2:] * a[:, 2] + b


@dataclass(frozen=True)
class _Fit:
    plane: MidlinePlane
    score: float  # on all points
    converged: bool
    evaluations: int


COARSE_POINTS = 3000  # points scored in the coarse search
FINE_POINTS = 12000  # ... in the Nelder-Mead refinement


def _fit(score: _Symmetry, paper: MidlinePlane, config: HemisphereConfig) -> _Fit:
    """The most symmetric plane: coarse searches around the paper plane, first over
    (yaw, offset), then over (roll, offset), then Nelder-Mead over all three."""
    n0 = np.asarray(paper.normal)
    up = score.grid.normal - (score.grid.normal @ n0) * n0  # out of the image plane
    up /= np.linalg.norm(up)
    ap = np.cross(up, n0)  # in the image plane, perpendicular to the row direction
    c = np.asarray(paper.point)

    def plane(x) -> MidlinePlane:  # x = (yaw deg, roll deg, offset mm)
        yaw, roll = np.radians(x[0]), np.radians(x[1])
        n = np.cos(roll) * (np.cos(yaw) * n0 + np.sin(yaw) * ap) + np.sin(roll) * up
        return MidlinePlane(tuple(c + x[2] * n), tuple(n))

    def axis(half: float, step: float) -> np.ndarray:
        m = int(np.ceil(half / step))
        return np.linspace(-m * step, m * step, 2 * m + 1)  # always holds 0

    coarse, fine = score.thinned(COARSE_POINTS), score.thinned(FINE_POINTS)
    offsets = axis(config.search_offset_mm, 3.0)
    best = max(((y, 0.0, o) for y in axis(config.search_yaw_deg, 4.0) for o in offsets),
               key=lambda x: coarse(plane(x)))
    best = max(((best[0], r, o) for r in axis(config.search_roll_deg, 4.0) for o in offsets),
               key=lambda x: coarse(plane(x)))
    x0 = np.asarray(best, dtype=float)
    simplex = np.vstack([x0, x0 + [2.0, 0, 0], x0 + [0, 2.0, 0], x0 + [0, 0, 2.0]])
    res = minimize(lambda x: -fine(plane(x)), x0, method="Nelder-Mead",
                   options={"initial_simplex": simplex, "xatol": 0.05, "fatol": 1e-5,
                            "maxiter": 400})
    result = plane(res.x)
    return _Fit(result, score(result), bool(res.success),
                coarse.evaluations + fine.evaluations + 1)
