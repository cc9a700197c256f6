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


def test_the_median_rule_minimises_expected_error_and_keeps_order():
    from cohort.model.decoding import expected_abs_error

    rng = np.random.default_rng(1)
    probs = _probs(rng, 15)
    k = np.arange(15)
    brute = np.array([[np.sum(p * np.abs(s - k)) for s in k] for p in probs])
    assert np.allclose(expected_abs_error(probs), brute)
    checked = 0
    for _ in range(40):
        probs = _probs(rng, 11)
        got, moved = ordered_slices(probs, "median")
        own = (-expected_abs_error(probs)).argmax(axis=1)
        cum = probs.cumsum(axis=1)  # each landmark's own choice is a median of its distribution
        assert all(cum[n, own[n]] >= 0.5 - 1e-12 and (own[n] == 0 or cum[n, own[n] - 1] <= 0.5)
                   for n in range(6))
        for side in ("right", "left"):
            rows = [LANDMARKS.index(f"{side}_{kk}") for kk in
                    ("carotid_canal", "petrolingual", "anterior_clinoid")]
            assert got[rows[0]] <= got[rows[1]] <= got[rows[2]]
            score, _ = _brute(-expected_abs_error(probs[rows]))
            assert np.isclose(-expected_abs_error(probs[rows])[[0, 1, 2], got[rows]].sum(), score)
        checked += bool(moved)
        assert set(moved) == {LANDMARKS[n] for n in range(6) if got[n] != own[n]}
    assert checked
    # a skewed distribution: the mode and the median differ, and the median is chosen
    skew = np.zeros((6, 10))
    skew[:, 2], skew[:, 5], skew[:, 6] = 0.4, 0.3, 0.3
    assert ordered_slices(skew, "mode")[0].tolist() == [2] * 6
    assert ordered_slices(skew, "median")[0].tolist() == [5] * 6


def test_mirroring_offsets_and_their_metadata():
    import pytest

    from cohort.errors import ConfigError
    from cohort.model.decoding import (
        MIRRORED,
        LandmarkDecoding,
        combine,
        shift_down,
        spacing_band,
    )

    assert [LANDMARKS[i] for i in MIRRORED][:3] == [
        "left_carotid_canal", "left_petrolingual", "left_anterior_clinoid"]
    assert [spacing_band(s) for s in (0.625, 1.0, 1.25, 3.0, 3.26, 7.0)] == [
        "thin", "thin", "mid", "mid", "thick", "thick"]
    p = np.zeros((6, 12))
    p[:, 6] = 1.0
    moved = shift_down(p, np.full(6, 1.5))  # 1.5 slices toward index 0
    assert np.allclose(moved[:, 4], 0.5) and np.allclose(moved[:, 5], 0.5)
    q = np.zeros((6, 12))
    q[:, 8] = 1.0
    dec = LandmarkDecoding(mirror=True, rule="median",
                           offsets_mm={"mid": {"right_petrolingual": 2.5}}, fitted_on="x")
    out = combine(p, q, 2.5, dec)  # mean of both passes, right petrolingual 1 slice down
    assert np.allclose(out[0, [6, 8]], 0.5)
    assert np.allclose(out[1, [5, 7]], 0.5)
    assert np.allclose(combine(p, q, 0.625, dec), (p + q) / 2)  # no offsets for thin slices
    assert np.allclose(combine(p, q, 2.5, LandmarkDecoding()), p)  # the paper's: one pass
    again = LandmarkDecoding.from_metadata(dec.to_metadata())
    assert again == dec and LandmarkDecoding.from_metadata(None) == LandmarkDecoding()
    with pytest.raises(ConfigError, match="rule"):
        LandmarkDecoding(rule="mean")
    with pytest.raises(ConfigError, match="band"):
        LandmarkDecoding(offsets_mm={"thinnest": {"right_petrolingual": 1.0}})
