"""Landmark agreement by acquisition: errors per landmark, groups, and what a flag is worth."""

import numpy as np
import pandas as pd
import pytest

from cohort.agreement import agreement_by_acquisition, landmark_errors, summarise, to_markdown
from cohort.anatomy import LANDMARKS
from cohort.errors import ConfigError


def _tables():
    truth, series = [], []
    specs = [  # uid, thickness, tilt, yaw, neck cut, stepped, error (slices) of every landmark
        ("a", 0.625, 0.0, 0.0, False, False, 0),
        ("b", 2.5, 15.0, 0.0, False, False, 1),
        ("c", 5.0, 0.0, 9.0, True, False, 3),
        ("d", 3.0, 0.0, 0.0, False, True, 2),
    ]
    for uid, th, tilt, yaw, neck, stepped, err in specs:
        t = {"series_instance_uid": uid, "series_role": "primary", "slice_thickness_mm": th,
             "gantry_tilt_deg": tilt, "yaw_deg": yaw, "roll_deg": 0.0, "neck_cut": neck,
             "variable_spacing": stepped, "synthetic": True}
        s = {"series_uid": uid, "status": "ok", "slice_thickness_mm": th, "slice_step_mm": th,
             "low_confidence_landmarks": list(LANDMARKS[:2]) if err >= 2 else []}
        for n, name in enumerate(LANDMARKS):
            t[f"{name}_slice"], t[f"{name}_z_mm"] = 20 + n, (20 + n) * th + 0.1
            s[f"{name}_slice"] = 20 + n + err
            s[f"{name}_z_mm"], s[f"{name}_prob"] = (20 + n + err) * th, 0.9
        truth.append(t)
        series.append(s)
    truth.append({**truth[0], "series_instance_uid": "loc", "series_role": "localizer"})
    series.append({**series[0], "series_uid": "failed", "status": "error"})
    return pd.DataFrame(series), pd.DataFrame(truth)


def test_errors_per_landmark_in_slices_and_mm_with_their_groups():
    series, truth = _tables()
    e = landmark_errors(series, truth)
    assert len(e) == 4 * 6 and set(e["series_uid"]) == {"a", "b", "c", "d"}
    c = e[e["series_uid"] == "c"]
    assert (c["error_slices"] == 3).all()
    assert np.allclose(c["error_mm"], 3 * 5.0 - 0.1)
    assert set(c["groups"].iloc[0]) == {"thickness > 3 mm", "head rotated", "neck cut off"}
    assert set(e[e["series_uid"] == "b"]["groups"].iloc[0]) == {
        "thickness 1-3 mm", "gantry tilted (corrected)"}
    assert "variable thickness" in e[e["series_uid"] == "d"]["groups"].iloc[0]
    assert e[e["series_uid"] == "a"]["groups"].iloc[0] == ["thickness <= 1 mm"]


def test_agreement_by_group_and_the_worth_of_the_flag():
    series, truth = _tables()
    e = landmark_errors(series, truth)
    overall = summarise(e)
    assert overall["mae_slices"] == pytest.approx((0 + 1 + 3 + 2) / 4)
    assert overall["top1"] == pytest.approx(0.25) and overall["acc_tau1"] == pytest.approx(0.5)
    # flagged: the first two landmarks of c and d, all wrong; unflagged wrong: the rest of c, d
    assert overall["flagged"] == pytest.approx(4 / 24)
    assert overall["wrong_if_flagged"] == 1.0
    assert overall["wrong_if_unflagged"] == pytest.approx(8 / 20)
    table = agreement_by_acquisition(e).set_index("group")
    assert table.loc["thickness <= 1 mm", "mae_slices"] == 0
    assert table.loc["neck cut off", "series"] == 1
    assert table.loc["none of these", "series"] == 1  # only a
    assert np.isnan(table.loc["thickness <= 1 mm", "wrong_if_flagged"])  # nothing flagged
    md = to_markdown(agreement_by_acquisition(e), synthetic=True)
    assert "SYNTHETIC" in md and "| neck cut off | 1 | 6 | 3.000 |" in md


def test_a_truth_table_without_landmark_columns_is_refused():
    series, truth = _tables()
    with pytest.raises(ConfigError, match="<landmark>_slice"):
        landmark_errors(series, truth.drop(columns=[f"{LANDMARKS[0]}_slice"]))
