"""Shapes of the head phantom, in the head frame (millimetres, LPS axes, origin at the sella).

Every solid gives an approximate signed distance (negative inside, in mm) for arrays of
head-frame coordinates, and an axis-aligned bounding box so that the renderer evaluates it
only where it can matter. Occupancy, and with it partial-volume blurring, follows from the
distance: ``clip(0.5 - d / edge, 0, 1)`` for an edge width of about one pixel.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.spatial import cKDTree

Vec = tuple[float, float, float]


@dataclass(frozen=True)
class Clip:
    """Keeps a solid between two heights of the head frame (w = superior axis), in mm, and
    on the inner side of oblique planes, each given as (a point on it, its outward normal)."""

    w_min: float = -np.inf
    w_max: float = np.inf
    planes: tuple[tuple[Vec, Vec], ...] = ()


def half_space(point, normal) -> tuple[Vec, Vec]:
    """A clip plane through ``point``; the solid is kept where (p - point) . normal <= 0."""
    n = np.asarray(normal, dtype=float)
    n = n / np.linalg.norm(n)
    return tuple(float(v) for v in point), tuple(float(v) for v in n)


@dataclass(frozen=True)
class Solid:
    """Base: a shape with one HU value, optionally clipped in height."""

    hu: float
    clip: Clip = field(default_factory=Clip)

    def bbox(self) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self._bbox()
        lo = lo.copy()
        hi = hi.copy()
        lo[2] = max(lo[2], self.clip.w_min - 2.0)
        hi[2] = min(hi[2], self.clip.w_max + 2.0)
        return lo, hi

    def distance(self, u: np.ndarray, v: np.ndarray, w: np.ndarray) -> np.ndarray:
        d = self._distance(u, v, w)
        if np.isfinite(self.clip.w_min):
            d = np.maximum(d, self.clip.w_min - w)
        if np.isfinite(self.clip.w_max):
            d = np.maximum(d, w - self.clip.w_max)
        for (px, py, pz), (nx, ny, nz) in self.clip.planes:
            d = np.maximum(d, (u - px) * nx + (v - py) * ny + (w - pz) * nz)
        return d

    def _bbox(self) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _distance(self, u, v, w):  # pragma: no cover - abstract
        raise NotImplementedError


def rotation(yaw_deg: float = 0.0, pitch_deg: float = 0.0, roll_deg: float = 0.0) -> np.ndarray:
    """Rotation matrix: yaw about the superior axis, pitch about the left axis, roll about
    the posterior axis, applied in that order (degrees)."""
    y, p, r = np.radians([yaw_deg, pitch_deg, roll_deg])
    rz = np.array([[np.cos(y), -np.sin(y), 0], [np.sin(y), np.cos(y), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    ry = np.array([[np.cos(r), 0, np.sin(r)], [0, 1, 0], [-np.sin(r), 0, np.cos(r)]])
    return ry @ rx @ rz


@dataclass(frozen=True)
class Ellipsoid(Solid):
    """An ellipsoid; ``axes`` rotates it (columns are its own axes in the head frame)."""

    center: Vec = (0.0, 0.0, 0.0)
    radii: Vec = (1.0, 1.0, 1.0)
    axes: tuple[Vec, Vec, Vec] | None = None

    def _bbox(self):
        c = np.asarray(self.center, float)
        r = np.asarray(self.radii, float)
        if self.axes is None:
            ext = r
        else:
            a = np.asarray(self.axes, float).T  # columns = ellipsoid axes
            ext = np.sqrt((a**2) @ (r**2))
        return c - ext, c + ext

    def _distance(self, u, v, w):
        cx, cy, cz = self.center
        rx, ry, rz = self.radii
        du, dv, dw = u - cx, v - cy, w - cz
        if self.axes is not None:
            a = np.asarray(self.axes, float).T
            du, dv, dw = (
                a[0, 0] * du + a[1, 0] * dv + a[2, 0] * dw,
                a[0, 1] * du + a[1, 1] * dv + a[2, 1] * dw,
                a[0, 2] * du + a[1, 2] * dv + a[2, 2] * dw,
            )
        q = (du / rx) ** 2 + (dv / ry) ** 2 + (dw / rz) ** 2
        # (rho - 1) scaled by the smallest radius: exact for spheres, close for the mild
        # eccentricities used here, and cheap.
        return (np.sqrt(q) - 1.0) * min(self.radii)


@dataclass(frozen=True)
class Cylinder(Solid):
    """A vertical elliptic cylinder between two heights."""

    center_uv: tuple[float, float] = (0.0, 0.0)
    radii_uv: tuple[float, float] = (1.0, 1.0)
    w_range: tuple[float, float] = (-1.0, 1.0)

    def _bbox(self):
        (cu, cv), (ru, rv), (w0, w1) = self.center_uv, self.radii_uv, self.w_range
        return np.array([cu - ru, cv - rv, w0]), np.array([cu + ru, cv + rv, w1])

    def _distance(self, u, v, w):
        (cu, cv), (ru, rv), (w0, w1) = self.center_uv, self.radii_uv, self.w_range
        rho = np.sqrt(((u - cu) / ru) ** 2 + ((v - cv) / rv) ** 2)
        return np.maximum((rho - 1.0) * min(ru, rv), np.maximum(w0 - w, w - w1))


@dataclass(frozen=True)
class Tube(Solid):
    """A tube of varying radius around a polyline (a chain of round capsules)."""

    points: tuple[Vec, ...] = ()
    radii: tuple[float, ...] = ()

    def _bbox(self):
        p = np.asarray(self.points, float)
        r = float(np.max(self.radii))
        return p.min(axis=0) - r, p.max(axis=0) + r

    def _distance(self, u, v, w):
        p = np.asarray(self.points, float)
        r = np.asarray(self.radii, float)
        a, b = p[:-1], p[1:]
        ab = b - a
        ab2 = np.maximum((ab**2).sum(axis=1), 1e-12)
        best = np.full(u.shape, np.inf, dtype=u.dtype)
        for s in range(len(a)):
            t = ((u - a[s, 0]) * ab[s, 0] + (v - a[s, 1]) * ab[s, 1] + (w - a[s, 2]) * ab[s, 2])
            t = np.clip(t / ab2[s], 0.0, 1.0)
            d = np.sqrt((u - a[s, 0] - t * ab[s, 0]) ** 2 + (v - a[s, 1] - t * ab[s, 1]) ** 2
                        + (w - a[s, 2] - t * ab[s, 2]) ** 2) - (r[s] + t * (r[s + 1] - r[s]))
            np.minimum(best, d, out=best)
        return best


@dataclass(frozen=True)
class Loft(Solid):
    """An elliptic cross-section lofted along the superior axis: centre and radii vary
    (piecewise linearly) with height between the given stations."""

    heights: tuple[float, ...] = (0.0, 1.0)
    centers_uv: tuple[tuple[float, float], ...] = ((0.0, 0.0), (0.0, 0.0))
    radii_uv: tuple[tuple[float, float], ...] = ((1.0, 1.0), (1.0, 1.0))

    def _bbox(self):
        c, r = np.asarray(self.centers_uv, float), np.asarray(self.radii_uv, float)
        lo = np.append((c - r).min(axis=0), self.heights[0])
        hi = np.append((c + r).max(axis=0), self.heights[-1])
        return lo, hi

    def _distance(self, u, v, w):
        h = np.asarray(self.heights, float)
        c, r = np.asarray(self.centers_uv, float), np.asarray(self.radii_uv, float)
        cu, cv = (np.interp(w, h, c[:, d]).astype(u.dtype) for d in (0, 1))
        ru, rv = (np.interp(w, h, r[:, d]).astype(u.dtype) for d in (0, 1))
        rho = np.sqrt(((u - cu) / ru) ** 2 + ((v - cv) / rv) ** 2)
        return np.maximum((rho - 1.0) * np.minimum(ru, rv), np.maximum(h[0] - w, w - h[-1]))


@dataclass(frozen=True)
class WallPatch(Solid):
    """A calcified patch in the wall of a vessel of lumen radius ``radius`` around the
    polyline ``points``: in the vessel's own coordinates (arc length s along the centreline,
    angle a around it from the frame ``normals``), the patch is ``thickness(s, a)`` mm thick,
    from 0.3 of it inside the wall's inner surface to the rest outside, and zero outside its
    lumpy outline. ``lumps`` rows (ds, da, amplitude, width_s, width_a) modulate a smooth
    bump of half-length ``half_length`` (mm) and half-arc ``half_arc`` (rad) centred at
    s = ``s0``, a = ``a0``; the peak thickness is ``peak_mm``."""

    points: tuple[Vec, ...] = ()
    normals: tuple[Vec, ...] = ()  # per point: a unit normal (the frame's first axis)
    radius: float = 2.0
    s0: float = 0.0
    a0: float = 0.0
    half_length: float = 1.0
    half_arc: float = 1.0
    peak_mm: float = 0.5
    lumps: tuple[tuple[float, float, float, float, float], ...] = ()

    def _bbox(self):
        p = np.asarray(self.points, float)
        r = self.radius + self.peak_mm * 2.0 + 0.5
        return p.min(axis=0) - r, p.max(axis=0) + r

    def thickness(self, s: np.ndarray, a: np.ndarray) -> np.ndarray:
        """Thickness (mm; negative outside the outline) at arc length s and angle a."""
        da = np.angle(np.exp(1j * (a - self.a0)))  # wrapped to -pi..pi
        x = (s - self.s0) / self.half_length
        bx = 1.0 - x * x
        by = 1.0 - (da / self.half_arc) ** 2 if self.half_arc < np.pi else np.ones_like(bx)
        base = np.where((bx > 0) & (by > 0), bx * by, np.minimum(bx, by))
        lump = np.ones_like(bx)
        for ds, dang, amp, ws, wa in self.lumps:
            dd = np.angle(np.exp(1j * (a - self.a0 - dang)))
            lump = lump + amp * np.exp(-((s - self.s0 - ds) / ws) ** 2 - (dd / wa) ** 2)
        return self.peak_mm * base * np.where(base > 0, lump, 1.0)

    def _bend(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The centreline's curvature vector at arc lengths s, on the frame's two normals."""
        p = np.asarray(self.points, float)
        cum = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(p, axis=0), axis=1))])
        tan = np.gradient(p, cum, axis=0)
        tan /= np.linalg.norm(tan, axis=1, keepdims=True)
        curv = np.gradient(tan, cum, axis=0)
        n1 = np.asarray(self.normals, float)
        n2 = np.cross(tan, n1)
        return (np.interp(s, cum, (curv * n1).sum(axis=1)),
                np.interp(s, cum, (curv * n2).sum(axis=1)))

    def _grid(self, n: int):
        s = self.s0 + np.linspace(-self.half_length, self.half_length, n)
        half = min(self.half_arc, np.pi)
        a = self.a0 + np.linspace(-half, half, n)
        return s, a, np.maximum(self.thickness(s[:, None], a[None, :]), 0.0)

    def max_thickness(self, n: int = 81) -> float:
        return float(self._grid(n)[2].max())

    def volume_mm3(self, n: int = 64) -> float:
        """The patch's volume, integrated over its (s, a) outline in the vessel's curved
        coordinates (the volume element r (1 - r k.e_r) dr da ds of a bent tube)."""
        s, a, t = self._grid(n)
        k1, k2 = self._bend(s)
        k_r = k1[:, None] * np.cos(a)[None, :] + k2[:, None] * np.sin(a)[None, :]
        r_in, r_out = self.radius - 0.3 * t, self.radius + 0.7 * t
        # midpoint rule over the radius; where a sharp bend folds the tube, no volume
        f = (np.arange(4) + 0.5) / 4
        r = r_in[..., None] + f * (r_out - r_in)[..., None]
        ring = (r * np.maximum(1.0 - k_r[..., None] * r, 0.0)).mean(axis=-1) * (r_out - r_in)
        return float((ring * (s[1] - s[0]) * (a[1] - a[0])).sum())

    @property
    def reach(self) -> float:
        """The farthest the patch gets from the centreline (mm)."""
        lump = 1.0 + sum(max(amp, 0.0) for _, _, amp, _, _ in self.lumps)
        return self.radius + 0.7 * self.peak_mm * lump + 0.5

    def _samples(self, step: float = 0.05):
        """The centreline resampled every ``step`` mm: points, arc length, tangent, normal."""
        p = np.asarray(self.points, float)
        nrm = np.asarray(self.normals, float)
        seg = np.diff(p, axis=0)
        length = np.maximum(np.linalg.norm(seg, axis=1), 1e-12)
        cum = np.concatenate([[0.0], np.cumsum(length)])
        s = np.arange(0.0, cum[-1] + step / 2, step)
        k = np.clip(np.searchsorted(cum, s, side="right") - 1, 0, len(seg) - 1)
        t = ((s - cum[k]) / length[k])[:, None]
        pts = p[k] + t * seg[k]
        tan = seg[k] / length[k, None]
        n1 = (1 - t) * nrm[k] + t * nrm[k + 1]
        n1 -= (n1 * tan).sum(axis=1, keepdims=True) * tan
        n1 /= np.maximum(np.linalg.norm(n1, axis=1, keepdims=True), 1e-12)
        return pts, s, tan, n1

    def hull_points(self, n: int = 9) -> np.ndarray:
        """Points (m, 3) around the patch (its outline at the inner and the outer surface
        of its thickest lump): their box holds the patch."""
        pts, arc, tan, n1 = self._samples()
        s = self.s0 + np.linspace(-self.half_length, self.half_length, n)
        half = min(self.half_arc, np.pi)
        a = self.a0 + np.linspace(-half, half, 2 * n)
        i = np.clip(np.searchsorted(arc, s), 0, len(arc) - 1)
        n2 = np.cross(tan[i], n1[i])
        radial = (np.cos(a)[None, :, None] * n1[i][:, None, :]
                  + np.sin(a)[None, :, None] * n2[:, None, :])  # (n, 2n, 3)
        out = []
        for r in (self.radius - 0.3 * self.peak_mm * 3, self.reach):
            out.append((pts[i][:, None, :] + r * radial).reshape(-1, 3))
        return np.concatenate(out)

    def local(self, u, v, w, within: float = np.inf):
        """(arc length s, angle a, distance r from the centreline) of each point; points
        farther than ``within`` from the centreline get r = inf (and s, a = 0)."""
        pts, arc, tan, n1 = self._samples()
        xyz = np.stack([np.ravel(u), np.ravel(v), np.ravel(w)], axis=1).astype(float)
        tree = cKDTree(pts)
        r, idx = tree.query(xyz, distance_upper_bound=within)
        near = np.isfinite(r)
        s = np.zeros(len(xyz))
        a = np.zeros(len(xyz))
        i = idx[near]
        rel = xyz[near] - pts[i]
        rel -= (rel * tan[i]).sum(axis=1, keepdims=True) * tan[i]  # across the vessel only
        n2 = np.cross(tan[i], n1[i])
        a[near] = np.arctan2((rel * n2).sum(axis=1), (rel * n1[i]).sum(axis=1))
        s[near] = arc[i]
        r[near] = np.linalg.norm(rel, axis=1)
        shape = np.shape(u)
        return s.reshape(shape), a.reshape(shape), r.reshape(shape)

    def occupancy(self, u, v, w, edge: float) -> np.ndarray:
        """Share of a voxel of width ``edge`` around each point that the patch fills: the
        overlap of the wall's calcified shell with the voxel along the radius (exact for a
        thin shell, which a distance ramp would widen to half a voxel)."""
        s, a, r = self.local(u, v, w, within=self.reach + edge)
        t = self.thickness(s, a)
        top = np.minimum(self.radius + 0.7 * t, r + edge / 2)
        bottom = np.maximum(self.radius - 0.3 * t, r - edge / 2)
        return np.clip((top - bottom) / edge, 0.0, 1.0).astype(np.float32)

    def _distance(self, u, v, w):
        s, a, r = self.local(u, v, w)
        t = self.thickness(s, a)
        inner = self.radius - 0.3 * t
        outer = self.radius + 0.7 * t
        d = np.maximum(r - outer, inner - r)
        return d.astype(np.float32)
