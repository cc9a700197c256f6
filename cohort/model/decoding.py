"""From the DST's six distributions over slices to six landmark slices.

How, a checkpoint says (`LandmarkDecoding`, in its metadata as ``decoding``; checkpoints
without it decode as the paper does):

* ``mirror``: the model also sees the volume mirrored left-right, its left and right
  landmarks swapped back, and the two distributions are averaged (test-time augmentation:
  one more forward pass);
* ``offsets_mm``: per band of slice spacing (`SPACING_BANDS`), how far above its truth the
  model's expected z of each landmark lies, in millimetres, measured on held-out scans
  (`cohort.train.calibration.fit_location_offsets`); each distribution is moved down by it
  before a slice is chosen (location calibration, as temperature scaling is for spread);
* ``rule``: ``"mode"`` (the paper) takes the most probable slices; ``"median"`` takes the
  slices of least expected absolute error, which is what MAE in slices counts.

The paper takes each landmark's most probable slice on its own. Anatomy orders them: on
each side the carotid canal lies at or below the petrolingual ligament, which lies at or
below the anterior clinoid. `ordered_slices` takes, per side, the three slices of highest
joint log-probability that keep that order (exact, O(D) by dynamic programming); where the
independent argmaxes are already in order (nearly always on a good model) it returns them
unchanged, and it says which landmarks it had to move, so that a caller can flag them.

`sub_slice` refines a slice to a position between slices: the probability-weighted mean
index over the slices within ``radius`` of the chosen one, for z in millimetres finer than
the slice step.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from cohort.anatomy import LANDMARK_KINDS, LANDMARKS, SIDES
from cohort.errors import ConfigError

RULES = ("mode", "median")
#: slice-spacing bands with their own location offsets: <= 1 mm, 1-3 mm, > 3 mm (the bands of
#: `cohort.agreement`); a spacing within 1% of an edge belongs to the lower band
SPACING_BANDS = ("thin", "mid", "thick")
_BAND_EDGES_MM = (1.0, 3.0)
#: row n of a left-right mirrored volume's output is landmark MIRRORED[n] of the original
MIRRORED = tuple(LANDMARKS.index(n.replace("right_", "@").replace("left_", "right_")
                                 .replace("@", "left_")) for n in LANDMARKS)


def spacing_band(spacing_mm: float) -> str:
    """The `SPACING_BANDS` entry of a slice spacing."""
    return SPACING_BANDS[int(np.searchsorted(np.array(_BAND_EDGES_MM) * 1.01, spacing_mm))]


@dataclass(frozen=True)
class LandmarkDecoding:
    """How a checkpoint's distributions become landmark slices (see module)."""

    mirror: bool = False
    rule: str = "mode"
    #: band -> landmark -> mm the model's z lies above the truth; missing entries are 0
    offsets_mm: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    fitted_on: str = ""  # where the offsets were measured

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ConfigError(f"landmark decoding rule must be one of {', '.join(RULES)}, got "
                              f"{self.rule!r}")
        for band, per in self.offsets_mm.items():
            bad = [n for n, v in per.items() if n not in LANDMARKS or not np.isfinite(v)]
            if band not in SPACING_BANDS or bad:
                raise ConfigError(f"location offsets need a band of {SPACING_BANDS} and finite "
                                  f"mm per landmark, got {band!r}: {dict(per)}")

    def offsets(self, spacing_mm: float) -> np.ndarray:
        """(6,) offsets in mm for a volume of this slice spacing."""
        per = self.offsets_mm.get(spacing_band(spacing_mm), {})
        return np.array([float(per.get(n, 0.0)) for n in LANDMARKS])

    def to_metadata(self) -> dict:
        return {"mirror": bool(self.mirror), "rule": self.rule, "fitted_on": self.fitted_on,
                "offsets_mm": {b: {n: float(v) for n, v in per.items()}
                               for b, per in self.offsets_mm.items()}}

    @classmethod
    def from_metadata(cls, metadata: Mapping | None) -> LandmarkDecoding:
        """A checkpoint's decoding; the paper's (no mirror, no offsets, mode) without one."""
        if not metadata:
            return cls()
        return cls(mirror=bool(metadata.get("mirror", False)),
                   rule=str(metadata.get("rule", "mode")),
                   offsets_mm={b: dict(v) for b, v in (metadata.get("offsets_mm") or {}).items()},
                   fitted_on=str(metadata.get("fitted_on", "")))


def shift_down(probabilities: np.ndarray, slices: np.ndarray) -> np.ndarray:
    """(6, D) distributions each moved ``slices[n]`` slices toward index 0 (fractional:
    linear interpolation; mass moved past either end is dropped and the rest renormalised)."""
    p = np.asarray(probabilities, dtype=np.float64)
    k = np.arange(p.shape[1], dtype=np.float64)
    out = np.stack([np.interp(k + float(s), k, row, left=0.0, right=0.0)
                    for row, s in zip(p, slices, strict=True)])
    total = out.sum(axis=1, keepdims=True)
    return np.where(total > 0, out / np.where(total > 0, total, 1.0), p)


def combine(probabilities: np.ndarray, mirrored: np.ndarray | None, spacing_mm: float,
            decoding: LandmarkDecoding) -> np.ndarray:
    """The (6, D) distributions a decoding chooses from: the mean with the mirrored pass's
    (rows already in `LANDMARKS` order) when there is one, moved by the location offsets."""
    p = np.asarray(probabilities, dtype=np.float64)
    if decoding.mirror and mirrored is not None:
        p = (p + np.asarray(mirrored, dtype=np.float64)) / 2
    off = decoding.offsets(spacing_mm)
    if spacing_mm > 0 and np.any(off != 0):
        p = shift_down(p, off / spacing_mm)
    return p


def expected_abs_error(probabilities: np.ndarray) -> np.ndarray:
    """(6, D): at each slice s, the expected |s - true slice| under each distribution."""
    p = np.asarray(probabilities, dtype=np.float64)
    k = np.arange(p.shape[1], dtype=np.float64)
    c = np.cumsum(p, axis=1)  # P(S <= s)
    m = np.cumsum(p * k, axis=1)  # E[S; S <= s]
    return k * c - m + (m[:, -1:] - m) - k * (1 - c)


def _ordered_three(lp: np.ndarray) -> tuple[int, int, int]:
    """(3, D) scores (e.g. log-probabilities) -> (i, j, k), i <= j <= k, maximising their
    sum."""
    d = lp.shape[1]
    # best_a[j]: best lp[0] at an index <= j, and where
    arg_a = np.zeros(d, dtype=np.int64)
    best_a = np.empty(d)
    best, where = -np.inf, 0
    for j in range(d):
        if lp[0, j] > best:
            best, where = lp[0, j], j
        best_a[j], arg_a[j] = best, where
    # best_b[k]: best best_a[j] + lp[1, j] at j <= k, and where
    ab = best_a + lp[1]
    arg_b = np.zeros(d, dtype=np.int64)
    best_b = np.empty(d)
    best, where = -np.inf, 0
    for k in range(d):
        if ab[k] > best:
            best, where = ab[k], k
        best_b[k], arg_b[k] = best, where
    k = int(np.argmax(best_b + lp[2]))
    j = int(arg_b[k])
    return int(arg_a[j]), j, k


def ordered_slices(probabilities: np.ndarray, rule: str = "mode"
                   ) -> tuple[np.ndarray, tuple[str, ...]]:
    """Landmark slices in anatomical order on each side.

    Args:
        probabilities: (6, D) per landmark (in the order of `LANDMARKS`) a distribution over
            the D slices.
        rule: ``"mode"``: the ordered slices of highest joint log-probability; ``"median"``:
            those of least summed expected absolute error (each landmark alone: its median).

    Returns:
        (6,) slice indices, and the names of the landmarks whose slice differs from their
        own best one (empty when those were in order).
    """
    probs = np.asarray(probabilities, dtype=np.float64)
    if rule == "mode":
        with np.errstate(divide="ignore"):
            score = np.log(probs)
    elif rule == "median":
        score = -expected_abs_error(probs)
    else:
        raise ConfigError(f"decoding rule must be one of {', '.join(RULES)}, got {rule!r}")
    top = score.argmax(axis=1)
    out = top.copy()
    for side in SIDES:
        rows = [LANDMARKS.index(f"{side}_{kind}") for kind in LANDMARK_KINDS]
        if top[rows[0]] <= top[rows[1]] <= top[rows[2]]:
            continue
        out[rows] = _ordered_three(score[rows])
    moved = tuple(name for n, name in enumerate(LANDMARKS) if out[n] != top[n])
    return out, moved


def sub_slice(probabilities: np.ndarray, slices: np.ndarray, radius: int = 2) -> np.ndarray:
    """(6,) fractional slice positions: per landmark, the probability-weighted mean index of
    the slices within ``radius`` of its chosen slice."""
    probs = np.asarray(probabilities, dtype=np.float64)
    d = probs.shape[1]
    out = np.empty(len(slices))
    for n, s in enumerate(slices):
        lo, hi = max(0, int(s) - radius), min(d, int(s) + radius + 1)
        w = probs[n, lo:hi]
        out[n] = float((w * np.arange(lo, hi)).sum() / w.sum()) if w.sum() > 0 else float(s)
    return out
