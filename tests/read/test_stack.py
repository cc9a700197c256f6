"""Stack geometry from slice headers: variable-thickness block protocols against real holes,
and the sign of gantry tilt."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cohort.errors import ErrorCode, SeriesError
from cohort.read.stack import SliceGeometry, check_stack, signed_tilt_deg, spacing_blocks

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def _tilted_iop(deg: float, flip_rows: bool = False) -> tuple[float, ...]:
    """Rows along +x; columns along +y tilted by ``deg`` (z component sin(deg)), as the
    Philips series of ../shared/realdata write it; ``flip_rows`` stores the image upside
    down (columns along -y)."""
    t = math.radians(deg)
    col = np.array([0.0, math.cos(t), math.sin(t)]) * (-1 if flip_rows else 1)
    return (1.0, 0.0, 0.0, *col)


def block_stack(blocks: list[tuple[int, float]], *, tilt_deg: float = 0.0,
                junction_extra_mm: float = 0.0, drop: tuple[int, ...] = (),
                flip_rows: bool = False) -> list[SliceGeometry]:
    """Contiguous blocks of (n slices, thickness mm): along the tilted normal the step is
    the thickness; the table moves along z (thickness / cos(tilt) per slice)."""
    iop = _tilted_iop(tilt_deg, flip_rows)
    cos_t = math.cos(math.radians(tilt_deg))
    z, out, previous = -60.0, [], None
    for n, t in blocks:
        if previous is not None:
            z += ((previous + t) / 2 + junction_extra_mm) / cos_t - t / cos_t
        for _ in range(n):
            z += t / cos_t if out or previous is not None else 0.0
            out.append(SliceGeometry((-100.0, -110.0, z), iop, 64, 64, (0.5, 0.5), t))
        previous = t
    out = [s for k, s in enumerate(out) if k not in drop]
    return out[::-1]  # as archives often list them: head to feet


def test_the_head_protocol_of_the_issue_is_two_blocks_not_missing_slices():
    """14 x 4 mm then 14 x 7 mm, gantry tilted 18.5 deg: 4.2 and 7.4 mm apart in z."""
    stack = block_stack([(14, 4.0), (14, 7.0)], tilt_deg=18.5)
    z = sorted(s.position[2] for s in stack)
    assert np.diff(z)[0] == pytest.approx(4.22, abs=0.01)
    assert np.diff(z)[-1] == pytest.approx(7.38, abs=0.01)
    g = check_stack(stack)
    assert g.variable_spacing and g.missing_slices == 0 and not g.uneven
    assert [(b.n_slices, b.thickness_mm) for b in g.blocks] == [(14, 4.0), (14, 7.0)]
    assert [b.spacing_mm for b in g.blocks] == pytest.approx([4.0, 7.0], abs=1e-6)
    assert g.step_mm == pytest.approx(4.0, abs=1e-6)
    assert g.tilt_deg == pytest.approx(18.5, abs=0.01)
    # the grid runs at 4 mm along the normal from the lowest slice to the top one
    extent = 13 * 4.0 + 5.5 + 13 * 7.0
    assert g.grid.shape[0] == math.floor(extent / 4.0 + 0.05) + 1
    assert g.needs_resampling and not g.regular
    assert any("contiguous blocks" in n for n in g.notes)
    # every kept slice sits at its true fractional position on that grid
    assert g.slice_index[14] == pytest.approx((13 * 4.0 + 5.5) / 4.0)


def test_a_hole_at_the_junction_is_missing_slices_and_says_where():
    stack = block_stack([(14, 4.0), (14, 7.0)], junction_extra_mm=12.0)
    with pytest.raises(SeriesError) as e:
        check_stack(stack)
    assert e.value.code is ErrorCode.MISSING_SLICES
    assert "changes from 4 to 7 mm" in e.value.detail and "not covered" in e.value.detail


def test_a_missing_slice_inside_a_block_is_counted_and_filled():
    stack = block_stack([(14, 4.0), (14, 7.0)], drop=(20,))
    g = check_stack(stack)
    assert g.variable_spacing and g.missing_slices == 1


def test_slices_further_apart_than_thick_are_not_a_block_stack():
    """Runs of 1 and 1.5 mm slices, 7 and 4 mm apart: the thickness changes, but the slices
    do not touch, so this is no block protocol; the usual checks apply (here: uneven)."""
    stack = [SliceGeometry(s.position, s.orientation, 64, 64, (0.5, 0.5), 1.0 + 0.5 * (k < 14))
             for k, s in enumerate(block_stack([(14, 7.0), (14, 4.0)])[::-1])]
    d = np.array(sorted(s.position[2] for s in stack))
    assert spacing_blocks(d, [s.thickness for s in stack], d) is None
    g = check_stack(stack)
    assert not g.variable_spacing and g.uneven


def test_a_mixed_stack_with_holes_names_its_thicknesses():
    stack = block_stack([(14, 4.0), (14, 7.0)], drop=(16, 17, 18, 19, 20, 21))
    with pytest.raises(SeriesError) as e:
        check_stack(stack)
    assert e.value.code is ErrorCode.MISSING_SLICES
    assert "largest gap 6 slices of 7 mm" in e.value.detail


def test_one_thickness_keeps_the_regular_path():
    stack = block_stack([(20, 2.5)])
    g = check_stack(stack)
    assert not g.variable_spacing and g.regular and g.grid.shape[0] == 20


def test_without_thickness_in_the_headers_blocks_are_not_guessed():
    """No SliceThickness: contiguity cannot be checked, so the stack is an uneven one."""
    stack = [SliceGeometry(s.position, s.orientation, 64, 64, (0.5, 0.5), None)
             for s in block_stack([(14, 4.0), (14, 7.0)])]
    g = check_stack(stack)
    assert not g.variable_spacing and g.uneven and not g.blocks


@pytest.mark.parametrize("deg", [18.5, -18.5, 7.0])
def test_tilt_sign_is_geometric_whatever_the_row_order(deg):
    """Negative when the front edge of each slice is higher (cohort.geometry). Storing the
    image upside down (columns along -y) does not change the measured sign."""
    plain = check_stack(block_stack([(20, 2.5)], tilt_deg=deg))
    flipped = check_stack(block_stack([(20, 2.5)], tilt_deg=deg, flip_rows=True))
    assert signed_tilt_deg(plain) == pytest.approx(deg, abs=0.01)
    assert signed_tilt_deg(flipped) == pytest.approx(deg, abs=0.01)
    # deg > 0 here means the columns (towards the back, +y) rise: the back edge is higher
    back_edge_higher = _tilted_iop(deg)[5] > 0
    assert (signed_tilt_deg(plain) > 0) == back_edge_higher
