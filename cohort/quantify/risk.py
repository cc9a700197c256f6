"""Risk groups from total ICAC volume, and study-specific cut-offs from a cohort."""

from __future__ import annotations

import numpy as np


def risk_group(total_mm3: float, thresholds_mm3: tuple[float, ...],
               groups: tuple[str, ...]) -> str:
    """The group whose index is the number of cut-offs ``total_mm3`` strictly exceeds.

    With cut-offs (0, 10, 100): 0 -> groups[0]; (0, 10] -> groups[1]; (10, 100] -> groups[2];
    above 100 -> groups[3].
    """
    n = int(np.count_nonzero(float(total_mm3) > np.asarray(thresholds_mm3, dtype=float)))
    return groups[n]


def tertile_cutoffs(total_volumes_mm3) -> tuple[float, float, float]:
    """Cut-offs (0, t1, t2) for none / three tertiles of the *non-zero* volumes of a cohort.

    Pass them as `QuantifyConfig.risk_thresholds_mm3` to make risk groups study-specific.

    Raises:
        ValueError: fewer than three non-zero volumes.
    """
    v = np.asarray(total_volumes_mm3, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    if len(v) < 3:
        raise ValueError(f"tertiles need at least 3 non-zero volumes, got {len(v)}")
    t1, t2 = np.quantile(v, [1 / 3, 2 / 3])
    if not t1 < t2:
        raise ValueError(f"the non-zero volumes have equal tertiles ({t1} mm^3); give "
                         "cut-offs by hand")
    return 0.0, float(t1), float(t2)
