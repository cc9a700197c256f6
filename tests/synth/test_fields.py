"""A subject's smooth fields: the warp is invertible, gentle and (nearly) mirror-symmetric."""

from __future__ import annotations

import numpy as np

from cohort.synth.fields import (
    BORDER,
    FLOOR,
    MAX_SLOPE,
    SPACING_MM,
    THICKNESS,
    WARP,
    FieldSpec,
    make_fields,
)


def _fields(seed: int, asymmetry_mm: float = 0.6):
    return make_fields(np.random.default_rng(seed), (-100, -120, -120), (100, 120, 110),
                       FieldSpec(asymmetry_mm=asymmetry_mm), center=(0.0, 10.0, 20.0))


def test_unwarp_inverts_the_warp_and_the_warp_is_gentle():
    f = _fields(3)
    pts = np.random.default_rng(0).uniform((-70, -90, -80), (70, 90, 90), size=(200, 3))
    back = f.unwarp_points(f.warp_points(pts))
    assert np.abs(back - pts).max() < 0.01
    moved = np.linalg.norm(f.warp_points(pts) - pts, axis=1)
    assert moved.max() <= f.warp_bound_mm + 1e-3 and moved.mean() > 0.5  # it does move
    slope = max(float(np.abs(np.diff(f.data[c], axis=ax)).max()) / SPACING_MM
                for c in range(3) for ax in range(3))
    assert slope <= MAX_SLOPE + 1e-6  # fold-free


def test_shape_fields_are_mirror_symmetric_but_for_the_asymmetric_part():
    f = _fields(4, asymmetry_mm=0.0)
    warp = f.data[WARP]
    np.testing.assert_allclose(warp[0], -warp[0][..., ::-1], atol=1e-5)  # u part odd
    np.testing.assert_allclose(warp[1:], warp[1:][..., ::-1], atol=1e-5)  # v, w even
    for c in (THICKNESS, FLOOR, BORDER):
        np.testing.assert_allclose(f.data[c], f.data[c][..., ::-1], atol=1e-5)
    for c in (FLOOR, BORDER):  # functions of (u, v): the floor stays one surface
        assert np.ptp(f.data[c], axis=0).max() < 1e-5
    g = _fields(4)
    assert 0.05 < np.abs(g.data[0] + g.data[0][..., ::-1]).max() < 3.0  # slightly asymmetric
