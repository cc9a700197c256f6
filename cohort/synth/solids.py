"""Shapes of the head phantom, in the head frame (millimetres, LPS axes, origin at the sella).

Every solid gives an approximate signed distance (negative inside, in mm) for arrays of
head-frame coordinates, and an axis-aligned bounding box so that the renderer evaluates it
only where it can matter. Occupancy, and with it partial-volume blurring, follows from the
distance: ``clip(0.5 - d / edge, 0, 1)`` for an edge width of about one pixel.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

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
