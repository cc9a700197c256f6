"""`QuantifyConfig`: risk-group cut-offs and the QC thresholds of quantification.

(Kept beside the stage it configures; it can move into `cohort.config` with the others.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cohort.errors import ConfigError

#: how a side whose landmarks are out of anatomical order is quantified
OUT_OF_ORDER_POLICIES = ("sort", "omit")
#: the low-confidence threshold when neither the config nor the model gives one (a checkpoint
#: written before thresholds were fitted): a round placeholder, not chosen on any data (with
#: the shipped model it flagged nearly every series)
FALLBACK_MIN_LANDMARK_PROBABILITY = 0.5


@dataclass(frozen=True)
class QuantifyConfig:
    """How landmarks and calcium become segment volumes, a risk group and QC flags.

    Risk groups. ``risk_thresholds_mm3`` are increasing total-ICAC-volume cut-offs; a
    series is in group ``risk_groups[n]`` where ``n`` is the number of cut-offs its total
    volume *strictly exceeds*. The default (0, 10, 100) mm^3 gives: none (no calcium),
    low (up to 10 mm^3: a few small plaques), moderate (10-100), high (above 100). They
    are one decade apart because ICAC volumes spread over orders of magnitude (the papers
    plot them on log axes). **These defaults are round placeholders, not values from a
    published study: risk-group cut-offs are study-specific.** Derive your own, e.g.
    tertiles of the non-zero volumes of your cohort (`cohort.quantify.risk.tertile_cutoffs`),
    and pass them here.

    QC thresholds, in the comments below, each raise one flag of
    `cohort.quantify.qc.QCFlag`; none of them changes a number in the result.
    """

    risk_thresholds_mm3: tuple[float, ...] = (0.0, 10.0, 100.0)
    risk_groups: tuple[str, ...] = ("none", "low", "moderate", "high")  # one more than cut-offs
    #: where the cut-offs come from, written with every row's group (``risk_scheme``)
    risk_source: str = "placeholder default, not a published scale"
    # a landmark whose calibrated probability (peak of its slice distribution) is below this
    # is "low confidence". None: the model's own threshold, chosen on its validation split to
    # separate right from wrong landmarks and carried by its checkpoint (rows:
    # confidence_threshold; cohort.quantify.qc.with_model_threshold), else
    # FALLBACK_MIN_LANDMARK_PROBABILITY; a number here overrides it for every model
    min_landmark_probability: float | None = None
    # left and right landmarks of one kind more than this far apart (mm, along the slice
    # normal) are implausible: the sides differ by a few mm, head roll adds up to ~8 mm
    max_side_gap_mm: float = 15.0
    # consecutive landmarks of a side (canal -> petrolingual, petrolingual -> clinoid) closer
    # or farther apart than this (mm, along the slice normal, widened by one slice step for
    # the slices' own quantisation) are not an anatomy but a misplaced landmark: the petrous
    # and cavernous ICA each rise about 10-20 mm (the phantoms: 14 +- 1.8 and 15.5 +- 1.8 mm,
    # at least 9 and 10); both landmarks of such a pair are listed as low confidence
    landmark_gap_mm: tuple[float, float] = (5.0, 30.0)
    # calcium more than this far above a side's anterior clinoid: beyond the supraclinoid
    # ICA, which ends ~10-15 mm above the clinoid at the terminal bifurcation
    max_above_clinoid_mm: float = 20.0
    # calcium more than this far below a side's carotid canal: a head CT covers the upper
    # cervical ICA only; calcium far below is more likely not the intracranial carotid
    max_below_canal_mm: float = 40.0
    # a side with landmarks out of order (not cc <= pl <= ac): "sort" quantifies it with its
    # three slices sorted, "omit" leaves its four segments empty (None); both flag it
    out_of_order: str = "sort"

    def __post_init__(self) -> None:
        t = np.asarray(self.risk_thresholds_mm3, dtype=float)
        if len(t) and (not np.isfinite(t).all() or (np.diff(t) <= 0).any() or t[0] < 0):
            raise ConfigError(f"risk thresholds must be increasing, finite and >= 0 mm^3, "
                              f"got {self.risk_thresholds_mm3}")
        if len(self.risk_groups) != len(t) + 1:
            raise ConfigError(f"{len(t)} risk thresholds need {len(t) + 1} group names, got "
                              f"{len(self.risk_groups)}: {self.risk_groups}")
        if len(set(self.risk_groups)) != len(self.risk_groups):
            raise ConfigError(f"risk group names must be distinct, got {self.risk_groups}")
        if self.min_landmark_probability is not None and not (
                0.0 <= self.min_landmark_probability <= 1.0):
            raise ConfigError(f"min_landmark_probability must lie in 0-1, got "
                              f"{self.min_landmark_probability}")
        lo, hi = self.landmark_gap_mm
        if not 0 <= lo < hi:
            raise ConfigError(f"landmark_gap_mm must be (low, high) mm with 0 <= low < high, got "
                              f"{self.landmark_gap_mm}")
        for name in ("max_side_gap_mm", "max_above_clinoid_mm", "max_below_canal_mm"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"{name} must be a distance >= 0 mm, got {getattr(self, name)}")
        if not self.risk_source:
            raise ConfigError("risk_source must say where the cut-offs come from")
        if self.out_of_order not in OUT_OF_ORDER_POLICIES:
            raise ConfigError(f"out_of_order must be one of {', '.join(OUT_OF_ORDER_POLICIES)}, "
                              f"got {self.out_of_order!r}")

    @property
    def risk_scheme(self) -> str:
        """The cut-offs that make a row's risk group, as the tables carry them, e.g.
        ``none <= 0 < low <= 10 < moderate <= 100 < high (total mm^3; placeholder ...)``."""
        parts = [self.risk_groups[0]]
        for cut, group in zip(self.risk_thresholds_mm3, self.risk_groups[1:], strict=True):
            parts += [f"<= {cut:g} <", group]
        return f"{' '.join(parts)} (total mm^3; {self.risk_source})"
