"""Scanner artefacts on a noise-free image: beam hardening and metal streaks, motion.

**Streaks.** A polychromatic beam hardens as it crosses bone, so the scanner's water-based
correction under-counts the attenuation along rays through much bone: the error grows with
the square of the bone path length. Filtered back-projection spreads that error along the
rays, as dark bands between two dense objects (the Hounsfield bar between the petrous
pyramids) and bright/dark streaks from metal. We model exactly that, per slice: the bone
(and metal) path length along each ray, an error of ``-k p^2``, ramp-filtered and
back-projected on a coarse grid, added to the image. Dental metal weighs many times bone.

**Motion.** A head that moved during a rotation shows doubled edges in a run of slices:
the slice is blended with a shifted copy of itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

#: CT numbers above this count as bone for beam hardening; above METAL_HU as metal
BONE_HU, METAL_HU = 200.0, 2500.0
METAL_WEIGHT = 60.0  # metal's excess attenuation per HU above METAL_HU, relative to bone's
#: (amalgam attenuates tens of times more than bone; the stored CT number saturates)


@dataclass(frozen=True)
class StreakModel:
    """How strongly beam hardening shows (HU per (bone path in cm)^2) and on what grid."""

    k_hu: float = 15.0  # at 120 kVp: a residual Hounsfield bar of 5-20 HU in the brain
    size: int = 80  # pixels of the coarse reconstruction grid
    angles: int = 48
    min_error_hu: float = 4.0  # slices whose largest error is below this are left alone


def _rotation_grids(n: int, angles: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sampling grids that rotate an n x n image by each angle, and back."""
    theta = torch.arange(angles, dtype=torch.float32) * (np.pi / angles)
    c, s = torch.cos(theta), torch.sin(theta)
    zero = torch.zeros_like(c)
    fwd = torch.stack([torch.stack([c, -s, zero], 1), torch.stack([s, c, zero], 1)], 1)
    back = torch.stack([torch.stack([c, s, zero], 1), torch.stack([-s, c, zero], 1)], 1)
    size = (angles, 1, n, n)
    return (torch.nn.functional.affine_grid(fwd, size, align_corners=False),
            torch.nn.functional.affine_grid(back, size, align_corners=False))


def _ramp_filter(n: int) -> torch.Tensor:
    """Ramp filter with a Hann window (a soft head kernel's) for projections of n samples,
    zero-padded to 2n: no ringing of the coarse grid's highest frequencies."""
    freqs = torch.fft.rfftfreq(2 * n)
    return 2.0 * freqs.abs() * 0.5 * (1.0 + torch.cos(2.0 * np.pi * freqs))


def streak_error(hu: np.ndarray, pixel_mm: float, model: StreakModel = StreakModel()
                 ) -> np.ndarray:
    """Beam-hardening (and metal) error, in HU, for each slice of ``hu`` [k, j, i] (zero on
    slices with little bone)."""
    nk, nj, ni = hu.shape
    n, a = model.size, model.angles
    x = torch.from_numpy(np.ascontiguousarray(hu, dtype=np.float32))[:, None]
    # pool first (the excess is linear in HU between BONE_HU and METAL_HU, so a cell's mean
    # CT number gives its mean excess, bar air or soft tissue mixed into thin bone, which
    # lowers it a little); metal apart,
    # so that a filling is not averaged away
    cells = torch.nn.functional.adaptive_avg_pool2d(x, (n, n))
    metal = torch.nn.functional.adaptive_avg_pool2d(torch.clamp(x - METAL_HU, min=0.0), (n, n))
    small = (torch.clamp(cells, BONE_HU, METAL_HU) - BONE_HU + metal * METAL_WEIGHT) / 1000.0
    cell_cm = pixel_mm * max(nj, ni) / n / 10.0
    fwd, back = _rotation_grids(n, a)
    out = np.zeros(hu.shape, np.float32)
    filt = _ramp_filter(n)
    for k in range(nk):
        img = small[k:k + 1]
        if float(img.max()) <= 0:
            continue
        rot = torch.nn.functional.grid_sample(img.expand(a, 1, n, n), fwd, align_corners=False)
        p = rot.sum(dim=2)[:, 0] * cell_cm  # (a, n) bone path length (cm) per ray
        err = -model.k_hu * p * p
        if float(err.abs().max()) < model.min_error_hu:
            continue
        spec = torch.fft.rfft(err, n=2 * n, dim=1) * filt
        q = torch.fft.irfft(spec, n=2 * n, dim=1)[:, :n]  # filtered projections
        smear = q[:, None, None, :].expand(a, 1, n, n).contiguous()
        img_err = torch.nn.functional.grid_sample(smear, back, align_corners=False)
        rec = img_err.sum(dim=0) * (np.pi / a)  # (1, n, n)
        up = torch.nn.functional.interpolate(rec[None], size=(nj, ni), mode="bilinear",
                                             align_corners=False)[0, 0]
        out[k] = up.numpy()
    return out


def add_motion(hu: np.ndarray, first: int, count: int, shift_px: tuple[float, float],
               weight: float) -> None:
    """Doubled edges in slices first .. first + count - 1, in place: each is blended with a
    copy shifted by ``shift_px`` (rows, columns), ``weight`` the moved share."""
    for k in range(max(first, 0), min(first + count, hu.shape[0])):
        t = torch.from_numpy(hu[k])[None, None]
        nj, ni = hu.shape[1:]
        dy, dx = shift_px
        # grid_sample reads the input at (x + t): a content shift of +d is t = -d
        theta = torch.tensor([[[1.0, 0.0, -2 * dx / ni], [0.0, 1.0, -2 * dy / nj]]])
        grid = torch.nn.functional.affine_grid(theta, (1, 1, nj, ni), align_corners=False)
        moved = torch.nn.functional.grid_sample(t + 1000.0, grid, align_corners=False)[0, 0]
        hu[k] = (1 - weight) * hu[k] + weight * (moved.numpy() - 1000.0)
