"""Location calibration: offsets recovered from held-out scans, kept only out of sample."""

import numpy as np

from cohort.anatomy import LANDMARKS
from cohort.model.decoding import LandmarkDecoding
from cohort.train.location import fit_decoding, fit_location_offsets


def _gauss_logits(depth, centres, sigma=1.2):
    k = np.arange(depth)
    return np.stack([-0.5 * ((k - c) / sigma) ** 2 for c in centres])


def _cohort(rng, n, spacing, bias_mm, jitter=0.3):
    """Scans whose distributions sit ``bias_mm`` (per landmark) above the true slice."""
    # in anatomical order on each side (cc < pl < ac), as decoding keeps them
    true = rng.integers(5, 15, size=(n, 1)) + np.array([0, 7, 14, 1, 8, 15]) \
        + rng.integers(0, 2, size=(n, 6))
    logits = [_gauss_logits(40, t + bias_mm / spacing + rng.normal(0, jitter, 6)) for t in true]
    return logits, true


def test_offsets_are_the_median_error_per_band_and_small_bands_get_none():
    rng = np.random.default_rng(0)
    bias = np.array([0.0, 0.8, -0.5, 0.0, 0.6, -0.4])
    thin, t_thin = _cohort(rng, 12, 0.625, bias)
    mid, t_mid = _cohort(rng, 3, 2.0, -bias)  # 3 scans: too few to fit
    probs = [np.exp(lg - lg.max(axis=1, keepdims=True)) for lg in thin + mid]
    probs = [p / p.sum(axis=1, keepdims=True) for p in probs]
    off = fit_location_offsets(probs, np.vstack([t_thin, t_mid]), [0.625] * 12 + [2.0] * 3)
    assert set(off) == {"thin"}
    got = np.array([off["thin"][n] for n in LANDMARKS])
    assert np.allclose(got, bias, atol=0.15)


def test_a_biased_model_gets_its_decoding_and_a_useless_mirror_is_refused():
    rng = np.random.default_rng(1)
    bias = np.array([0.0, 0.9, -0.7, 0.0, 0.8, -0.6])  # mm, on 0.625 mm slices
    logits, true = _cohort(rng, 40, 0.625, bias)
    mirrored = [lg + rng.normal(0, 0.05, lg.shape) for lg in logits]
    groups = [f"P{i // 2}" for i in range(40)]  # two scans per patient
    fit = fit_decoding(logits, mirrored, true, [0.625] * 40, groups, np.ones(6),
                       fitted_on="test")
    assert fit.kept and fit.held_out_mae["candidate"] < fit.held_out_mae["paper"] - 0.5
    assert fit.decoding.mirror and fit.decoding.rule == "median"
    assert np.allclose([fit.decoding.offsets_mm["thin"][n] for n in LANDMARKS], bias, atol=0.2)
    meta = fit.to_metadata()
    assert meta["kept"] and meta["scans"] == 40
    assert LandmarkDecoding.from_metadata(meta) == fit.decoding
    # a mirrored pass that points elsewhere makes the candidate worse: the paper's decoding
    # stays, and the threshold is fitted on its slices
    honest, true = _cohort(rng, 40, 2.0, np.zeros(6), jitter=0.0)
    wild = [_gauss_logits(40, rng.integers(0, 40, 6), 0.5) * 50 for _ in honest]
    fit = fit_decoding(honest, wild, true, [2.0] * 40, groups, np.ones(6), fitted_on="test")
    assert not fit.kept and fit.decoding == LandmarkDecoding(fitted_on="test")
    assert fit.held_out_mae["paper"] == 0.0 and fit.threshold.n_wrong == 0
