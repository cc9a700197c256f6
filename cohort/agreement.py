"""How well a run's landmarks agree with known ones, by acquisition: where to trust them.

A run's ``series`` table against a landmark truth table (a synthetic cohort's
``ground_truth.parquet``, or a user's own labels with ``series_uid`` and the six
``<landmark>_slice`` columns, optionally ``<landmark>_z_mm``). One row per series and
landmark (`landmark_errors`), then per acquisition group (`agreement_by_acquisition`):

* MAE in slices (acquired slices: the predicted slice against the true one); the z error in
  mm (the predicted slice's z against the true z of the anatomical event, where the truth
  has it: a perfect slice still errs by up to half a slice step, so this is what the
  landmark is worth in the head, across thicknesses); Top-1 (the true slice); Acc(tau=1)
  (within one slice);
* what the ``low_confidence`` flag is worth: the share of landmarks flagged, and how often a
  flagged landmark and an unflagged one is wrong (more than one slice off).

Groups: all; slice thickness <= 1 mm, 1-3 mm, > 3 mm; gantry-tilted (corrected by the
reader); head rotated (yaw or roll beyond `ROTATED_DEG`); neck cut off; variable thickness
(stepped protocols); and the series none of those apply to. A series can fall in several.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from cohort.anatomy import LANDMARKS

#: a head turned (yaw) or tilted sideways (roll) by more than this counts as rotated
ROTATED_DEG = 5.0
THICKNESS_BANDS = ((0.0, 1.0, "thickness <= 1 mm"), (1.0, 3.0, "thickness 1-3 mm"),
                   (3.0, np.inf, "thickness > 3 mm"))
ERROR_COLUMNS = ("series_uid", "landmark", "slice", "true_slice", "error_slices", "z_mm",
                 "true_z_mm", "error_mm", "probability", "low_confidence", "thickness_mm",
                 "groups")


def _truth_frame(truth: pd.DataFrame) -> pd.DataFrame:
    t = truth.rename(columns={"series_instance_uid": "series_uid"}).copy()
    missing = [c for c in ("series_uid", *(f"{n}_slice" for n in LANDMARKS))
               if c not in t.columns]
    if missing:
        from cohort.errors import ConfigError

        raise ConfigError(f"the landmark truth table lacks {', '.join(missing)}; it needs "
                          "series_uid (or series_instance_uid) and the six <landmark>_slice "
                          "columns")
    if "series_role" in t:
        t = t[t["series_role"] != "localizer"]
    return t


def _groups(row, thickness: float) -> list[str]:
    out = [label for lo, hi, label in THICKNESS_BANDS if lo < thickness <= hi or
           (lo == 0.0 and thickness <= hi)]
    if abs(float(row.get("gantry_tilt_deg") or row.get("tilt_deg") or 0.0)) > 0.5:
        out.append("gantry tilted (corrected)")
    if max(abs(float(row.get("yaw_deg") or 0.0)), abs(float(row.get("roll_deg") or 0.0))) \
            > ROTATED_DEG:
        out.append("head rotated")
    if bool(row.get("neck_cut") or False):
        out.append("neck cut off")
    if bool(row.get("variable_spacing_true", row.get("variable_spacing")) or False):
        out.append("variable thickness")
    return out


def landmark_errors(series: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """One row per ok series of the run with a truth row, and landmark (`ERROR_COLUMNS`).

    ``groups`` lists the acquisition groups of the series (see module); the thickness is
    the truth table's ``slice_thickness_mm`` when it has one, else the run's.
    """
    t = _truth_frame(truth)
    ok = series[series["status"] == "ok"].merge(t, on="series_uid", suffixes=("", "_true"))
    rows = []
    for r in ok.to_dict("records"):
        thickness = r.get("slice_thickness_mm_true", r.get("slice_thickness_mm"))
        if thickness is None or not np.isfinite(thickness):
            thickness = r.get("slice_step_mm") or np.nan
        groups = _groups(r, float(thickness))
        low = set(r.get("low_confidence_landmarks") if r.get("low_confidence_landmarks")
                  is not None else [])
        for name in LANDMARKS:
            pred, true = r[f"{name}_slice"], r[f"{name}_slice_true"]
            z, true_z = r.get(f"{name}_z_mm"), r.get(f"{name}_z_mm_true")
            err_mm = (abs(float(z) - float(true_z)) if z is not None and true_z is not None
                      and np.isfinite(true_z) else np.nan)
            rows.append({"series_uid": r["series_uid"], "landmark": name, "slice": int(pred),
                         "true_slice": int(true), "error_slices": abs(int(pred) - int(true)),
                         "z_mm": z, "true_z_mm": true_z, "error_mm": err_mm,
                         "probability": r.get(f"{name}_prob"), "low_confidence": name in low,
                         "thickness_mm": float(thickness), "groups": groups})
    return pd.DataFrame(rows, columns=list(ERROR_COLUMNS))


def summarise(errors: pd.DataFrame) -> dict:
    """The agreement of a set of landmark rows (see module)."""
    e = errors["error_slices"].to_numpy(dtype=float)
    wrong = e > 1
    flagged = errors["low_confidence"].to_numpy(dtype=bool)
    return {"series": int(errors["series_uid"].nunique()), "landmarks": len(errors),
            "mae_slices": float(e.mean()) if len(e) else np.nan,
            "mae_mm": float(np.nanmean(errors["error_mm"])) if errors["error_mm"].notna().any()
            else np.nan,
            "top1": float((e == 0).mean()) if len(e) else np.nan,
            "acc_tau1": float((e <= 1).mean()) if len(e) else np.nan,
            "flagged": float(flagged.mean()) if len(e) else np.nan,
            "wrong_if_flagged": float(wrong[flagged].mean()) if flagged.any() else np.nan,
            "wrong_if_unflagged": float(wrong[~flagged].mean()) if (~flagged).any() else np.nan}


def agreement_by_acquisition(errors: pd.DataFrame,
                             groups: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per acquisition group present (all first, then `THICKNESS_BANDS`, the
    acquisition groups, and "none of these"), with `summarise`'s columns."""
    order = ["all", *(label for _, _, label in THICKNESS_BANDS), "gantry tilted (corrected)",
             "head rotated", "neck cut off", "variable thickness", "none of these"]
    if groups is not None:
        order = [g for g in order if g in groups]
    out = []
    special = {"gantry tilted (corrected)", "head rotated", "neck cut off",
               "variable thickness"}
    for g in order:
        if g == "all":
            sel = np.ones(len(errors), dtype=bool)
        elif g == "none of these":
            sel = np.array([not (set(gs) & special) for gs in errors["groups"]], dtype=bool)
        else:
            sel = np.array([g in gs for gs in errors["groups"]], dtype=bool)
        if sel.any():
            out.append({"group": g, **summarise(errors[sel])})
    return pd.DataFrame(out)


def to_markdown(table: pd.DataFrame, *, synthetic: bool) -> str:
    """The by-acquisition table as Markdown, labelled SYNTHETIC when it is."""
    head = ("| group | series | landmarks | MAE (slices) | z error (mm) | Top-1 | Acc(tau=1) | "
            "flagged | wrong if flagged | wrong if not flagged |")
    lines = [f"Landmark agreement by acquisition{' (SYNTHETIC data)' if synthetic else ''}",
             "", head, "|" + " --- |" * 10]

    def cell(v, fmt):
        return "n/a" if v is None or (isinstance(v, float) and not np.isfinite(v)) \
            else format(v, fmt)

    for r in table.to_dict("records"):
        lines.append(f"| {r['group']} | {r['series']} | {r['landmarks']} | "
                     f"{cell(r['mae_slices'], '.3f')} | {cell(r['mae_mm'], '.2f')} | "
                     f"{cell(r['top1'], '.3f')} | {cell(r['acc_tau1'], '.3f')} | "
                     f"{cell(r['flagged'], '.3f')} | {cell(r['wrong_if_flagged'], '.2f')} | "
                     f"{cell(r['wrong_if_unflagged'], '.3f')} |")
    return "\n".join(lines)
