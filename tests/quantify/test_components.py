"""26-connected components on the nonzero voxels agree with scipy.ndimage on the full grid."""

import numpy as np
import pytest
from scipy import ndimage

from cohort.quantify.components import nonzero_flat, sparse_components


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """True when two labellings group the same voxels together."""
    pairs = np.unique(np.stack([a, b], axis=1), axis=0)
    return len(pairs) == len(np.unique(a)) == len(np.unique(b))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_ndimage_label_with_a_full_structure(seed):
    rng = np.random.default_rng(seed)
    mask = rng.random((12, 15, 17)) < 0.08
    flat = nonzero_flat(mask)
    got = sparse_components(flat, mask.shape)
    ref, n = ndimage.label(mask, structure=np.ones((3, 3, 3)))
    assert got.max() + 1 == n
    assert _same_partition(got, ref.reshape(-1)[flat])


def test_corner_touching_voxels_are_one_component_and_numbered_by_first_voxel():
    mask = np.zeros((4, 4, 4), dtype=np.uint8)
    mask[3, 3, 3] = 1  # alone
    mask[0, 0, 0] = mask[1, 1, 1] = 7  # touch by a corner (any nonzero value is calcium)
    mask[0, 0, 3] = 1  # alone
    flat = nonzero_flat(mask)
    assert list(flat) == [0, 3, 21, 63]
    assert list(sparse_components(flat, mask.shape)) == [0, 1, 0, 2]


def test_no_voxels():
    assert len(sparse_components(np.zeros(0, dtype=np.int64), (3, 3, 3))) == 0
