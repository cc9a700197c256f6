"""Grids: index <-> world, tilt, and the axial grid a tilt correction resamples onto."""

import numpy as np
import pytest

from cohort.geometry import Grid


def _tilted(deg: float, n: int = 9) -> Grid:
    t = np.radians(deg)
    return Grid((-4.0, -4.0, 10.0), (1.0, 0, 0), (0, np.cos(t), -np.sin(t)), (0, 0, 2.5),
                (5, n, n))


def test_world_and_index_are_inverse():
    g = _tilted(15.0)
    ijk = np.array([[0, 0, 0], [3, 2, 1], [8.5, 0.25, 4]])
    np.testing.assert_allclose(g.index(g.world(ijk[:, 0], ijk[:, 1], ijk[:, 2])), ijk, atol=1e-12)
    np.testing.assert_allclose(g.world(0, 0, 1), [-4.0, -4.0, 12.5])


def test_tilt_is_measured_from_the_positions():
    assert _tilted(0.0).tilt_deg == pytest.approx(0.0, abs=1e-9)
    assert _tilted(18.5).tilt_deg == pytest.approx(18.5)
    assert _tilted(-16.5).tilt_deg == pytest.approx(16.5)
    assert _tilted(18.5).spacing == pytest.approx((1.0, 1.0, 2.5))


def test_axial_equivalent_keeps_the_centre_row_and_straightens_rows():
    g = _tilted(20.0)
    a = g.axial_equivalent()
    assert a.tilt_deg == pytest.approx(0.0, abs=1e-9)
    assert a.spacing[1] == pytest.approx(np.cos(np.radians(20.0)))
    centre = (g.shape[1] - 1) / 2
    for k in range(g.shape[0]):
        np.testing.assert_allclose(a.world(3, centre, k), g.world(3, centre, k), atol=1e-12)
    assert _tilted(0.0).axial_equivalent() is not None
    assert _tilted(0.0).axial_equivalent() == _tilted(0.0)


def test_slice_positions():
    g = _tilted(0.0)
    np.testing.assert_allclose(g.slice_positions()[:, 2], [10.0, 12.5, 15.0, 17.5, 20.0])


def test_native_slice_of_shares_a_junction_by_thickness():
    """A 4 mm slice at z 0 touching a 7 mm slice at z 5.5: they meet at z 2, not at the
    midpoint 2.75; equal slices meet halfway."""
    from cohort.geometry import native_slice_of

    centres, heights = [-4.0, 0.0, 5.5, 12.5], [4.0, 4.0, 7.0, 7.0]
    got = native_slice_of([-10.0, -2.1, -1.9, 1.9, 2.1, 8.9, 9.1, 99.0], centres, heights)
    assert got.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]


def test_header_tilt_conventions():
    from cohort.geometry import header_tilt_convention

    assert header_tilt_convention("GE MEDICAL SYSTEMS") == -1
    assert header_tilt_convention("Philips") == 1
    assert header_tilt_convention("SIEMENS") is None and header_tilt_convention(None) is None
