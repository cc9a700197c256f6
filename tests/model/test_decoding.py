"""Landmark decoding: anatomical order on each side, exactly, and sub-slice positions."""

import itertools

import numpy as np

from cohort.anatomy import LANDMARKS
from cohort.model.decoding import ordered_slices, sub_slice


def _probs(rng, d):
    p = rng.random((6, d)) ** 8
    return p / p.sum(axis=1, keepdims=True)


def _brute(lp):
    d = lp.shape[1]
    best = max(((lp[0, i] + lp[1, j] + lp[2, k], (i, j, k))
                for i, j, k in itertools.product(range(d), repeat=3) if i <= j <= k))
    return best


def test_ordered_argmaxes_are_returned_unchanged():
    d = 30
    probs = np.full((6, d), 1e-3)
    want = [3, 10, 17, 4, 11, 18]  # right cc, pl, ac, left cc, pl, ac
    for n, k in enumerate(want):
        probs[n, k] = 1.0
    got, moved = ordered_slices(probs / probs.sum(axis=1, keepdims=True))
    assert got.tolist() == want and moved == ()


def test_out_of_order_sides_get_the_best_ordered_triple():
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(60):
        probs = _probs(rng, 9)
        got, moved = ordered_slices(probs)
        top = probs.argmax(axis=1)
        for side in ("right", "left"):
            rows = [LANDMARKS.index(f"{side}_{k}") for k in
                    ("carotid_canal", "petrolingual", "anterior_clinoid")]
            i, j, k = got[rows]
            assert i <= j <= k
            score, _ = _brute(np.log(probs[rows]))
            assert np.isclose(np.log(probs[rows, [i, j, k]]).sum(), score)
            if not top[rows[0]] <= top[rows[1]] <= top[rows[2]]:
                checked += 1
                assert any(LANDMARKS[r] in moved for r in rows)
        assert set(moved) == {LANDMARKS[n] for n in range(6) if got[n] != top[n]}
    assert checked > 10  # random distributions are often out of order: the case is tested


def test_sub_slice_is_the_local_weighted_mean():
    probs = np.zeros((6, 20))
    probs[:, 8], probs[:, 9] = 0.25, 0.75
    probs[:, 0] = 0.0
    pos = sub_slice(probs, np.full(6, 9))
    assert np.allclose(pos, 8.75)
    far = np.zeros((6, 20))
    far[:, 2], far[:, 15] = 0.5, 0.5  # a second mode beyond the radius does not pull it
    assert np.allclose(sub_slice(far, np.full(6, 15)), 15.0)
