"""The report as one HTML page: headline numbers, then a section per question a study lead
asks (who was analysed and who left the flow, how much calcium where, which risk groups,
what changed over time, how sure the landmarks are, which series to look at, what made
these numbers). Plain strings with every value escaped; no template engine, no script
beyond each picture noting that it loaded (``data-loaded``: its width in pixels).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from html import escape
from urllib.parse import quote

import numpy as np
import pandas as pd

from cohort.anatomy import LANDMARK_KINDS, SEGMENT_KINDS, SIDES
from cohort.report import labels
from cohort.report.data import ReportData, Run
from cohort.report.style import CSS

#: picture files of the report, relative to its folder (`cohort.report.build`)
FIGURES = {
    "flow": "figures/flow.png", "volumes": "figures/segment_volumes.png",
    "risk": "figures/risk_groups.png", "change": "figures/change_over_time.png",
    "landmarks": "figures/landmark_confidence.png", "qc": "figures/qc_flags.png",
}


GENERATOR = "cohort report"  # in the page's head: a folder holding one is ours to replace


@dataclass(frozen=True)
class GalleryItem:
    """A flagged series in the gallery; ``picture`` relative to the report, None: missing."""

    series_key: str
    flags: tuple[str, ...]
    low_confidence: tuple[str, ...]
    total_mm3: float | None
    risk_group: str | None
    run_id: str
    picture: str | None
    original: str | None = None  # what the picture links to (the full-size original)


def render(data: ReportData, figures: set[str], gallery: list[GalleryItem], *,
           max_listed: int) -> str:
    """The page. ``figures``: the keys of `FIGURES` that were drawn."""
    body = [
        _header(data), _banner(data), _headline(data), _contents(),
        _flow(data, figures), _volumes(data, figures), _risk(data, figures),
        _change(data, figures), _landmarks(data, figures),
        _qc(data, figures, gallery, max_listed), _provenance(data),
        '<footer>Made by <code>cohort report</code> from the published tables of '
        f'<code>{escape(data.out_url)}</code> on {escape(data.generated)}. Every number '
        'here can be queried: <code>cohort query OUT "SELECT ... FROM series"</code> (views '
        'series, landmarks, segments, runs, patient_changes). The tables carry pseudonymous '
        'patient keys only, no names or birth dates.</footer>',
    ]
    title = ("SYNTHETIC - " if data.synthetic else "") + "ICA calcium cohort report"
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<meta name="generator" content="{GENERATOR}">'
            f'<title>{escape(title)}</title><style>{CSS}</style></head>\n<body>\n<main>\n'
            + "\n".join(body) + "\n</main>\n</body></html>\n")


# --- pieces ------------------------------------------------------------------------------------

def _img(key: str, figures: set[str], alt: str, caption: str) -> str:
    if key not in figures:
        return ""
    return (f'<figure><img src="{FIGURES[key]}" alt="{escape(alt)}" '
            'onload="this.dataset.loaded=this.naturalWidth" '
            'onerror="this.dataset.loaded=0">'
            f'<figcaption>{caption}</figcaption></figure>')


def _table(head: list[str], rows: list[list], *, cls: str = "") -> str:
    th = "".join(f"<th>{h}</th>" for h in head)
    tr = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{tr}</tbody></table>'


def _n(k) -> str:
    return f"{int(k):,}"


def _pct(k, n) -> str:
    return f"{100 * k / n:.0f}%" if n else "-"


def _mm3(v) -> str:
    if v is None or not np.isfinite(v):
        return "-"
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.1f}"


def _median_iqr(v: np.ndarray) -> str:
    v = v[np.isfinite(v)]
    if not len(v):
        return "-"
    q1, med, q3 = np.percentile(v, [25, 50, 75])
    return f"{_mm3(med)} <span class=muted>({_mm3(q1)}-{_mm3(q3)})</span>"


def _date(value) -> str:
    return pd.Timestamp(value).strftime("%Y-%m-%d") if pd.notna(value) else "-"


def _listed(value) -> tuple[str, ...]:
    """A list cell (a NumPy array, a list or None) as a tuple."""
    return () if value is None else tuple(value)


def _code(c: str) -> str:
    return f"<code>{escape(str(c))}</code>"


def _section(id_: str, title: str, lead: str, *parts: str) -> str:
    return (f'<section id="{id_}"><h2>{escape(title)}</h2><p class="lead">{lead}</p>'
            + "".join(parts) + "</section>")


def _header(d: ReportData) -> str:
    versions = sorted({str(r.manifest.get("code_version")) for r in d.runs})
    stopped = sum(bool(r.interrupted) for r in d.runs)
    return (f'<header><h1>Intracranial carotid artery calcification: cohort report</h1>'
            f'<p class="sub">Output <code>{escape(d.out_url)}</code> &middot; '
            f'{len(d.runs)} published run{"s" if len(d.runs) != 1 else ""}'
            f'{f" ({stopped} interrupted)" if stopped else ""} &middot; '
            f'cohort {escape(", ".join(versions))} &middot; made {escape(d.generated)}</p>'
            '</header>')


def _banner(d: ReportData) -> str:
    if not d.synthetic:
        return ""
    why = "; ".join(escape(w) for w in d.synthetic)
    return ('<div class="synthetic" role="alert"><strong>SYNTHETIC</strong>'
            '<span>A demonstration, not for clinical or research conclusions: '
            f'{why}.</span></div>')


def _headline(d: ReportData) -> str:
    f = d.flow
    vol = d.with_volumes
    total = vol["total_calcium_mm3"].to_numpy(dtype=float)
    anyc = int((total > 0).sum())
    failed = sum(f.run_failed.values()) + sum(f.index_failed.values())
    dates = pd.to_datetime(d.ok["study_date"], format="%Y%m%d", errors="coerce").dropna()
    span = f", {dates.min():%Y}-{dates.max():%Y}" if len(dates) else ""
    cards = [
        ("Patients", _n(f.patients), f"{_n(f.studies)} studies analysed{span}"),
        ("Series analysed", _n(f.analysed), f"of {_n(f.selected)} selected, "
                                            f"{_n(f.series)} found"),
        ("Any ICA calcium", _pct(anyc, len(vol)), f"{_n(anyc)} of {_n(len(vol))} series "
                                                  "with volumes"),
        ("Median total calcium", _mm3(np.median(total[total > 0])) + " mm³" if anyc else "-",
         "among series with calcium" + (", IQR {}-{}".format(
             *(_mm3(q) for q in np.percentile(total[total > 0], [25, 75]))) if anyc else "")),
        ("Flagged for review", _n(len(d.flagged)), _pct(len(d.flagged), f.analysed)
         + " of analysed series"),
        ("Failed", _n(failed), "series with an error code" if failed else "no series failed"),
    ]
    return '<div class="cards">' + "".join(
        f'<div class="card"><div class="k">{escape(k)}</div><div class="v">{v}</div>'
        f'<div class="s">{escape(s)}</div></div>' for k, v, s in cards) + "</div>"


def _contents() -> str:
    links = [("flow", "Cohort flow"), ("volumes", "Calcium by segment"),
             ("risk", "Risk groups"), ("change", "Change over time"),
             ("landmarks", "Landmark confidence"), ("qc", "QC gallery"),
             ("provenance", "Provenance")]
    return '<nav>' + " ".join(f'<a href="#{i}">{t}</a>' for i, t in links) + "</nav>"


def _flow(d: ReportData, figures: set[str]) -> str:
    f = d.flow
    rows = []
    steps = []
    if f.objects is not None:
        steps.append(("Objects in the archive", f.objects, [("not usable as images",
                                                              f.not_images)]))
    steps.append(("Image series found", f.series,
                  [("not selected", f.not_selected), ("failed the index's checks",
                                                      f.index_failed)]))
    steps.append(("Selected for analysis", f.selected,
                  [("failed in the run", f.run_failed)]
                  + ([("not processed yet", {"left for a later run": f.not_yet})]
                     if f.not_yet else [])))
    steps.append(("Analysed", f.analysed, [("without calcium volumes", f.no_volumes)]))
    steps.append(("With segment calcium volumes", f.with_volumes, []))
    for name, count, exits in steps:
        rows.append([f"<strong>{escape(name)}</strong>", f"<strong>{_n(count)}</strong>",
                     "", "", ""])
        for what, by in exits:
            for code, k in by.items():
                words = labels.reason(code)
                rows.append(["", "", escape(what), escape(words) + (
                    f" {_code(code)}" if words != code else ""), _n(k)])
    where = (f"the index <code>{escape(f.index_url)}</code> and the series table"
             if f.index_url else "the series table (no index was found, so the flow starts "
             "at the series and failures of the index and of the run are counted together)")
    return _section(
        "flow", "Cohort flow",
        "From the objects in the archive to the series measured, with every exclusion and "
        f"its reason (counted from {where}; each series is counted once, newest row).",
        _img("flow", figures, "study flow diagram", "Study flow. Each series leaves the flow "
             "at most once; the QC flags below do not exclude anything."),
        "<details><summary>The flow as a table, with the codes of the tables</summary>"
        + _table(["step", "count", "excluded", "reason", "n"], rows, cls="flow")
        + "</details>")


def _volumes(d: ReportData, figures: set[str]) -> str:
    s = d.segments
    rows = []
    for kind in SEGMENT_KINDS:
        for side in SIDES:
            v = s.loc[(s["kind"] == kind) & (s["side"] == side)]
            vol = v["volume_mm3"].to_numpy(dtype=float)
            width = (v["volume_mm3_high"] - v["volume_mm3_low"]).to_numpy(dtype=float)
            pos = vol[vol > 0]
            rows.append([escape(labels.kind(kind)), side, _n(len(vol)),
                         f"{_n(len(pos))} <span class=muted>({_pct(len(pos), len(vol))})"
                         "</span>", _median_iqr(pos),
                         _mm3(float(np.nanmax(vol))) if len(vol) else "-",
                         _mm3(float(np.nanmedian(width))) if np.isfinite(width).any()
                         else "-"])
    levels = d.with_volumes["calcium_interval_level"].dropna()
    width_head = (f"median width of the {100 * levels.iloc[0]:.0f}% interval, mm³"
                  if len(levels) else "median interval width mm³")
    recorded = {r.run_id: "external" if (r.manifest.get("masks") or (
        r.manifest.get("config") or {}).get("masks")) not in (None, "segmenter")
        else "not recorded" for r in d.runs}  # runs written before mask_source
    sources = d.with_volumes["mask_source"].fillna(
        d.with_volumes["run_id"].map(recorded)).fillna("not recorded").value_counts()
    src = ", ".join(f"{_code(k)} ({_n(v)} series)" for k, v in sources.items()) or "none"
    return _section(
        "volumes", "Calcium by segment and side",
        "ICA calcium volume in each of the eight segments (cervical below the carotid canal, "
        "petrous up to the petrolingual ligament, cavernous up to the anterior clinoid, "
        f"supraclinoid above), in series with volumes. Calcium masks: {src}.",
        _img("volumes", figures, "segment volumes", "Volumes on a log axis among series with "
             "calcium in the segment; the numbers at the bottom give how many have any."),
        _table(["segment", "side", "series", "any calcium", "median (IQR) mm³ if any",
                "max mm³", width_head], rows))


def _risk(d: ReportData, figures: set[str]) -> str:
    cutoffs, groups = d.risk
    vol = d.with_volumes
    counts = vol["risk_group"].value_counts()
    names = list(groups) + [g for g in counts.index if g not in groups]
    bounds = [0.0, *cutoffs]
    rows = []
    for i, g in enumerate(names):
        t = vol.loc[vol["risk_group"] == g, "total_calcium_mm3"].to_numpy(dtype=float)
        if i < len(groups):
            lo = "" if i == 0 else f"&gt; {bounds[i]:g}"
            hi = f"&le; {cutoffs[i]:g}" if i < len(cutoffs) else ""
            span = " and ".join(x for x in (lo, hi) if x) + " mm³"
        else:
            span = "(another scheme)"
        rows.append([f"<strong>{escape(g)}</strong>", span, _n(counts.get(g, 0)),
                     _pct(counts.get(g, 0), len(vol)), _median_iqr(t)])
    schemes = sorted(vol["risk_scheme"].dropna().unique())
    warn = ('<p class="note">The cut-offs are a <strong>placeholder</strong>, not a published '
            'scale: derive study-specific ones (e.g. tertiles of non-zero volumes) and re-run '
            'with <code>--risk-cutoffs</code>.</p>'
            if any("placeholder" in s for s in schemes) else "")
    return _section(
        "risk", "Risk groups",
        "Each series falls in the group of the number of cut-offs its total ICA calcium "
        "exceeds. Scheme" + ("s" if len(schemes) > 1 else "") + ": "
        + "; ".join(_code(s) for s in schemes) + ".",
        warn,
        _img("risk", figures, "risk groups", "Left: every series' total calcium, sorted, with "
             "the segmenter's interval where it made the mask; dashed: the cut-offs. Right: "
             "series per group."),
        _table(["group", "total calcium", "series", "share", "median (IQR) mm³"], rows))


def _change(d: ReportData, figures: set[str]) -> str:
    t, c = d.trajectories, d.changes
    if not len(t) and not len(c):
        return _section("change", "Change over time",
                        "No patient has two studies with volumes: nothing to compare yet. "
                        "Follow-up studies of the same patient (same pseudonymous key) appear "
                        "here once measured.")
    per_patient = []
    for key, g in t.groupby("patient_key", sort=False):
        g = g.sort_values("study_date")
        first, last = g.iloc[0], g.iloc[-1]
        years = (pd.Timestamp(last["study_date"]) - pd.Timestamp(first["study_date"])).days \
            / 365.25
        change = last["total_calcium_mm3"] - first["total_calcium_mm3"]
        per_patient.append((key, len(g), first["study_date"], last["study_date"], years,
                            first["total_calcium_mm3"], last["total_calcium_mm3"], change,
                            change / years if years > 0 else np.nan))
    years = np.array([p[4] for p in per_patient], dtype=float)
    rates = np.array([p[8] for p in per_patient], dtype=float)
    rose = int(np.sum([p[7] > 0 for p in per_patient]))
    summary = (f"{_n(len(per_patient))} patients have two or more dated studies with volumes, "
               f"followed for a median of {np.median(years):.1f} years "
               f"(range {years.min():.1f}-{years.max():.1f}); total calcium rose in "
               f"{_n(rose)} and did not rise in {_n(len(per_patient) - rose)}; median change "
               f"{_mm3(float(np.nanmedian(rates)))} mm³ per year." if per_patient else
               "No patient's total calcium can be followed (no two dated studies).")
    parts = [_img("change", figures, "change over time", "Left: total ICA calcium at each "
                  "study, one line per patient. Right: each patient's annualised change per "
                  "segment (the patient_changes view), first to last study.")]
    top = sorted(per_patient, key=lambda p: -abs(p[8]) if np.isfinite(p[8]) else 0)[:10]
    if top:
        parts.append("<h3>Largest annualised changes of total calcium</h3>" + _table(
            ["patient key", "studies", "first", "last", "years", "first mm³", "last mm³",
             "change mm³", "mm³ / year"],
            [[_code(str(p[0])[:12]), p[1], _date(p[2]), _date(p[3]), f"{p[4]:.1f}", _mm3(p[5]),
              _mm3(p[6]), _mm3(p[7]), _mm3(p[8])] for p in top]))
    if len(c):
        rows = []
        for kind in SEGMENT_KINDS:
            for side in SIDES:
                g = c[(c["kind"] == kind) & (c["side"] == side)]
                beyond = g["change_beyond_intervals"].fillna(False).astype(bool)
                known = g["change_beyond_intervals"].notna().any()  # external masks: none
                rows.append([escape(labels.kind(kind)), side, _n(len(g)),
                             _mm3(float(g["annual_rate_mm3_per_year"].median()))
                             if g["annual_rate_mm3_per_year"].notna().any() else "-",
                             _n(int((beyond & (g["change_mm3"] > 0)).sum())) if known else "-",
                             _n(int((beyond & (g["change_mm3"] < 0)).sum())) if known else "-",
                             _n(int((~g["same_model"].fillna(False).astype(bool)).sum()))])
        parts.append("<h3>By segment (first to last study)</h3>" + _table(
            ["segment", "side", "patients", "median mm³ / year", "rose beyond intervals",
             "fell beyond intervals", "measured by different models"], rows))
        mixed = int((~c["same_model"].fillna(False).astype(bool)).sum())
        if mixed:
            parts.append(f'<p class="note">{_n(mixed)} segment changes compare measurements '
                         'of two different models or mask sources: they mix biological change '
                         "with the models' difference.</p>")
    else:
        parts.append('<p class="note">The segment-level view (patient_changes) has no rows: no '
                     'patient has two studies with volumes there.</p>')
    return _section("change", "Change over time", summary, *parts)


def _landmarks(d: ReportData, figures: set[str]) -> str:
    lm = d.landmarks
    rows = []
    for kind in LANDMARK_KINDS:
        for side in SIDES:
            g = lm[(lm["kind"] == kind) & (lm["side"] == side)]
            p = g["probability"].to_numpy(dtype=float)
            below = int(np.sum(p < g["confidence_threshold"].to_numpy(dtype=float)))
            rows.append([escape(labels.kind(kind)), side, _n(len(g)),
                         f"{np.nanmedian(p):.2f}" if np.isfinite(p).any() else "-",
                         f"{np.nanmin(p):.2f}" if np.isfinite(p).any() else "-",
                         _n(below), _n(int(g["low_confidence"].fillna(False).sum()))])
    ok = d.ok
    thr = ok.groupby(["confidence_threshold", "confidence_threshold_source"],
                     dropna=False).size()
    thr_text = "; ".join(f"{t:.2f} from the {escape(str(s))} ({_n(n)} series)"
                         for (t, s), n in thr.items() if pd.notna(t)) or "not recorded"
    return _section(
        "landmarks", "Landmark confidence",
        "The landmark model's calibrated probability for each of the six landmarks that "
        "bound the segments. A landmark below the threshold, or one whose distance to the "
        "next is anatomically implausible, is listed as low confidence and its series "
        f"flagged. Threshold: {thr_text}.",
        _img("landmarks", figures, "landmark confidence", "Probability per landmark and "
             "side; crosses: landmarks listed as low confidence."),
        _table(["landmark", "side", "series", "median probability", "lowest",
                "below threshold", "listed low confidence"], rows))


def _qc(d: ReportData, figures: set[str], gallery: list[GalleryItem], max_listed: int) -> str:
    flagged = d.flagged
    parts = [_img("qc", figures, "QC flags", "Analysed series per QC flag (a series can "
                  "raise several).")]
    cards = []
    for g in gallery:
        chips = "".join(f'<span class="chip" title="{escape(labels.flag(f))}">{escape(f)}'
                        "</span>" for f in g.flags)
        low = (f'<div class="s">low confidence: {escape(", ".join(g.low_confidence))}</div>'
               if g.low_confidence else "")
        link = quote(g.original or g.picture or "")
        pic = (f'<a href="{link}"><img src="{quote(g.picture)}" alt="QC picture '
               f'of {escape(g.series_key)}" onload="this.dataset.loaded=this.naturalWidth" '
               'onerror="this.dataset.loaded=0"></a>' if g.picture else
               '<div class="missing">QC picture not found</div>')
        cards.append(f'<div class="qc">{pic}<div class="meta"><code>{escape(g.series_key)}'
                     f"</code><div>{chips}</div>{low}<div class=s>total "
                     f"{_mm3(g.total_mm3)} mm³ &middot; {escape(str(g.risk_group))} &middot; "
                     f"run {escape(g.run_id)}</div></div></div>")
    if cards:
        more = (f"<p class=note>The {len(cards)} series with the most flags are shown of "
                f"{_n(len(flagged))} flagged.</p>" if len(cards) < len(flagged) else "")
        parts.append("<h3>Flagged series</h3>" + more + '<div class="gallery">'
                     + "".join(cards) + "</div>")
    listed = flagged.head(max_listed)
    if len(listed):
        parts.append("<h3>All flagged series</h3>" + (
            f"<p class=note>The first {_n(max_listed)} of {_n(len(flagged))}; "
            "<code>cohort query OUT \"SELECT series_key, qc_flags, qc_picture FROM series "
            "WHERE len(qc_flags) > 0\"</code> lists all.</p>" if len(flagged) > max_listed
            else "") + _table(
            ["series", "flags", "low-confidence landmarks", "total mm³", "QC picture (in OUT)"],
            [[_code(r.series_key), escape(", ".join(r.qc_flags)),
              escape(", ".join(_listed(r.low_confidence_landmarks))) or "-",
              _mm3(r.total_calcium_mm3), _code(r.qc_picture or "-")]
             for r in listed.itertuples()], cls="small"))
    legend = "".join(f"<li>{_code(k)}: {escape(v)}</li>" for k, v in labels.FLAGS.items())
    parts.append(f"<details><summary>What each flag means</summary><ul>{legend}</ul>"
                 "</details>")
    lead = (f"{_n(len(flagged))} of {_n(d.flow.analysed)} analysed series raised a QC flag: "
            "they are kept in every count above, and are the series a person should look at. "
            "Each picture shows the six landmark planes on coronal and sagittal reformats "
            "with the calcium coloured by segment." if len(flagged) else
            "No analysed series raised a QC flag.")
    return _section("qc", "QC gallery", lead, *parts)


def _provenance(d: ReportData) -> str:
    runs = [[_code(r.run_id) + (' <span class="chip">interrupted</span>' if r.interrupted
                                else ""),
             escape(str(r.manifest.get("code_version"))),
             _n(r.manifest.get("counts", {}).get("ok", 0)),
             _n(r.manifest.get("counts", {}).get("skipped", 0)),
             _n(r.manifest.get("counts", {}).get("error", 0)),
             _n(r.manifest.get("counts", {}).get("finished_earlier", 0)),
             *_timing(r)] for r in d.runs]
    models = []
    seen = set()
    for r in d.runs:
        for role, info in (("landmark model (DST)", r.model),
                           ("calcium segmenter", r.segmenter)):
            if not info:
                continue
            key = (role, info.get("sha256"))
            if key in seen:
                continue
            seen.add(key)
            extra = (f"confidence threshold {info['confidence_threshold']}"
                     if info.get("confidence_threshold") is not None else
                     f"{100 * info['interval_level']:.0f}% intervals"
                     if info.get("interval_level") else "")
            models.append([escape(role), _code(info.get("name")),
                           f'<code class="hash">{escape(str(info.get("sha256")))}</code>',
                           escape(str(info.get("source"))), escape(str(info.get("trained_on"))),
                           escape(extra)])
        if r.manifest.get("masks") == "external":
            key = ("masks", "external")
            if key not in seen:
                seen.add(key)
                models.append(["calcium masks", "external (--masks)", "-", "-", "-", ""])
    ok = d.ok
    stages = [("read, validate, prepare", "seconds_prepare"),
              ("landmarks (DST)", "seconds_inference"),
              ("calcium segmenter", "seconds_segment"), ("quantify, QC", "seconds_quantify")]
    timing = []
    for name, col in stages:
        v = ok[col].to_numpy(dtype=float)
        v = v[np.isfinite(v)]
        if len(v):
            timing.append([escape(name), f"{np.median(v):.2f}", f"{np.percentile(v, 90):.2f}",
                           f"{v.sum():,.0f}"])
    configs = "".join(
        f"<details><summary>Configuration of run <code>{escape(r.run_id)}</code></summary>"
        f"<pre>{escape(json.dumps(_shown(r.manifest), indent=2, sort_keys=True))}</pre>"
        "</details>" for r in d.runs)
    return _section(
        "provenance", "Provenance",
        "What made these numbers: the runs, the models with their checksums and what they "
        "were trained on, the code version, timings and each run's whole configuration.",
        "<h3>Runs</h3>" + _table(["run", "code version", "ok", "skipped", "failed",
                                  "done earlier", "wall time", "scans / min"], runs)
        + "".join(_stopped(r, {x.run_id for x in d.runs}) for r in d.runs if r.interrupted),
        "<h3>Models</h3>" + _table(["role", "name", "sha256", "source", "trained on", ""],
                                   models),
        ("<h3>Time per series (seconds)</h3>" + _table(
            ["stage", "median", "90th percentile", "sum over series"], timing)) if timing
        else "",
        configs)


def _timing(run: Run) -> tuple[str, str]:
    """A run's wall time and scans per minute: ``interrupted`` and ``-`` for a run stopped
    before it ended (it has neither), ``-`` where the manifest lacks them."""
    if run.interrupted:
        return "interrupted", "-"
    seconds, rate = run.manifest.get("seconds"), run.manifest.get("scans_per_minute")
    return (f"{seconds:,.0f} s" if seconds is not None else "-",
            f"{rate:.1f}" if rate is not None else "-")


def _stopped(run: Run, published: set[str]) -> str:
    """What happened to an interrupted run, and which run did the rest of its work."""
    i = run.interrupted
    by, rows, left = _code(i.get("recovered_by")), i.get("rows", 0), i.get("not_written")
    at = str(i.get("recovered_at") or "").replace("T", " ").replace("Z", " UTC")
    took = "which took over the output" + (f" on {escape(at)}" if at else "")
    if left == 0:
        rest = f"it had written all its series; run {by}, {took}, published them"
    else:
        rest = "its remaining " + (f"{_n(left)} series" if left is not None else "series")
        were = "was" if left == 1 else "were"
        rest += (f" {were} processed by run {by}, {took}"
                 if i.get("recovered_by") in published
                 else f" {were} left to run {by}, {took} and has not published yet")
    return (f'<p class="note">Run {_code(run.run_id)} was <strong>interrupted</strong>: it '
            "was stopped before it ended (its driver killed, its node lost or the job "
            "failed), so it has no wall time or rate. The "
            f"{_n(rows)} series row{'s' if rows != 1 else ''} it had written "
            f"{'are' if rows != 1 else 'is'} kept in these tables; {rest}.</p>")


def _shown(manifest: dict) -> dict:
    """The run manifest without Ray Data's long statistics text."""
    return {k: v for k, v in manifest.items() if k != "ray_data_stats"}
