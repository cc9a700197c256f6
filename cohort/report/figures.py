"""The report's figures, drawn with matplotlib (Agg, no display) into PNG bytes.

Each function takes the gathered data and returns one PNG. Figures built on `Figure`
objects, never pyplot's global state, so that several reports can be drawn in one process.
Volumes spread over orders of magnitude: they are drawn on log axes, with the series
without calcium counted beside them rather than hidden.
"""

from __future__ import annotations

import functools
import io

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch, Patch
from matplotlib.ticker import FuncFormatter
from PIL import Image

from cohort.anatomy import LANDMARK_KINDS, SEGMENT_KINDS, SIDES
from cohort.report import labels
from cohort.report.attrition import Flow
from cohort.write.reformat import SEGMENT_COLOURS

WIDTH_IN = 11.5
SIDE_COLOURS = {"right": "#4477aa", "left": "#cc6677"}  # Paul Tol's bright scheme
ROSE, FELL = "#d55e00", "#009e73"  # change over time (Okabe-Ito): apart from the sides'
RISK_COLOURS = ("#bbbbbb", "#f2c14e", "#e07b39", "#b8293d", "#6b1020", "#3a0a12")
INK = "#222222"
MUTED = "#666666"
STYLE = {
    "font.size": 10, "axes.titlesize": 11, "axes.titleweight": "bold", "axes.labelsize": 10,
    "axes.spines.top": False, "axes.spines.right": False, "axes.edgecolor": "#888888",
    "axes.grid": True, "grid.color": "#e6e6e6", "grid.linewidth": 0.8,
    "axes.axisbelow": True, "xtick.color": INK, "ytick.color": INK, "text.color": INK,
    "axes.labelcolor": INK, "legend.frameon": False,
}


def _styled(draw):
    """``draw`` under the report's style (rcParams are read as artists are made)."""
    @functools.wraps(draw)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context(STYLE):
            return draw(*args, **kwargs)
    return wrapper


def _figure(height_in: float, synthetic: bool, layout: str | None = "constrained") -> Figure:
    """A figure the report's width; `Figure` renders with Agg, no pyplot, no display."""
    fig = Figure(figsize=(WIDTH_IN, height_in), layout=layout)
    if synthetic:  # figures leave the report (slides, papers): each says it itself
        mark = {"ha": "right", "color": "#b8293d", "fontsize": 9, "fontweight": "bold"}
        if layout is None:
            fig.text(0.995, 0.995, "SYNTHETIC", va="top", **mark)
        else:  # a title row of its own: the layout keeps it clear of the axes' titles
            fig.suptitle("SYNTHETIC", x=0.995, **mark)
    return fig


def _plain_numbers(axis) -> None:
    """Log-axis ticks as 0.1, 1, 10, 100 rather than powers of ten."""
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))


def _png(fig: Figure, dpi: int) -> bytes:
    """The figure as a palette PNG: a plot's few colours and their anti-aliased edges keep
    in 256 colours, and the file is a third of the RGB one."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
    image = Image.open(buf).convert("RGB")
    out = io.BytesIO()
    image.quantize(colors=256, method=Image.Quantize.FASTOCTREE).save(out, format="PNG",
                                                                      optimize=True)
    return out.getvalue()


def _rgb(kind: str) -> tuple[float, float, float]:
    return tuple(c / 255 for c in SEGMENT_COLOURS[kind])


# --- the flow diagram -----------------------------------------------------------------------

LINE_IN = 0.21  # height of a line of text in the diagram
MAX_REASONS = 7  # reasons listed per exclusion box; the rest are summed


@_styled
def flow_diagram(flow: Flow, *, dpi: int, synthetic: bool) -> bytes:
    """The study flow diagram: main boxes down the left, exclusions by reason to the right."""
    n = lambda k: f"{k:,}"  # noqa: E731
    steps: list[tuple[str, str, str]] = []  # (title, count, detail)
    exclusions: list[list[tuple[str, dict[str, int]]]] = []  # between step i and i + 1
    if flow.objects is not None:
        steps.append(("Objects in the archive", n(flow.objects),
                      "files listed and header-read by cohort index"))
        exclusions.append([("Not usable as images", flow.not_images)])
    detail = (f"CT stacks holding {n(flow.image_objects)} image files"
              if flow.image_objects is not None else "rows of the series table")
    steps.append(("Image series found", n(flow.series), detail))
    exclusions.append([("Not selected", flow.not_selected),
                       ("Failed the index's checks", flow.index_failed)]
                      if flow.index_url else [("Not selected", flow.not_selected)])
    steps.append(("Selected for analysis", n(flow.selected), "one series per study"))
    after = [("Failed in the run" if flow.index_url else "Failed (index or run)",
              flow.run_failed)]
    if flow.not_yet:
        after.append(("Not processed yet (--max-series)", {"left for a later run": flow.not_yet}))
    exclusions.append(after)
    steps.append(("Analysed", n(flow.analysed),
                  f"{n(flow.studies)} studies of {n(flow.patients)} patients"))
    exclusions.append([("Without calcium volumes", flow.no_volumes)])
    steps.append(("With segment calcium volumes", n(flow.with_volumes),
                  "eight ICA segments per series"))

    def lines_of(group: list[tuple[str, dict[str, int]]]) -> list[tuple[str, str, bool]]:
        out = []  # (text, count, is_heading)
        for title, by in group:
            out.append((title, n(sum(by.values())), True))
            items = list(by.items())
            shown, rest = items[:MAX_REASONS], items[MAX_REASONS:]
            out += [(f"{labels.reason(code)}", n(k), False) for code, k in shown]
            if rest:
                out.append((f"{len(rest)} other reasons", n(sum(k for _, k in rest)), False))
        return out

    box_h = 3 * LINE_IN + 0.25
    gaps = [max(0.75, len(lines_of(g)) * LINE_IN + 0.45) for g in exclusions]
    height = len(steps) * box_h + sum(gaps) + 0.3
    fig = _figure(height, synthetic, layout=None)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, WIDTH_IN)
    ax.set_ylim(0, height)
    ax.axis("off")
    main_x, main_w = 0.5, 4.6
    side_x, side_w = 6.2, 4.8
    y = height - 0.15
    for i, (title, count, detail) in enumerate(steps):
        top = y
        ax.add_patch(FancyBboxPatch((main_x, top - box_h), main_w, box_h,
                                    boxstyle="round,pad=0,rounding_size=0.08",
                                    fc="#eef3fa", ec="#4477aa", lw=1.4))
        cx = main_x + main_w / 2
        ax.text(cx, top - 0.22, title, ha="center", va="top", fontsize=10.5,
                fontweight="bold")
        ax.text(cx, top - 0.2 - LINE_IN * 1.05, count, ha="center", va="top",
                fontsize=15, fontweight="bold", color="#1d3f6e")
        ax.text(cx, top - box_h + 0.1, detail, ha="center", va="bottom", fontsize=8.8,
                color=MUTED)
        y = top - box_h
        if i == len(steps) - 1:
            break
        gap = gaps[i]
        ax.annotate("", xy=(cx, y - gap), xytext=(cx, y),
                    arrowprops={"arrowstyle": "-|>", "color": "#4477aa", "lw": 1.6,
                                "mutation_scale": 16})
        rows = lines_of(exclusions[i])
        side_h = len(rows) * LINE_IN + 0.2
        side_top = y - (gap - side_h) / 2
        mid = side_top - side_h / 2
        excluded = any(c != "0" for _, c, head in rows if head)
        ax.annotate("", xy=(side_x, mid), xytext=(cx, mid),
                    arrowprops={"arrowstyle": "-|>", "color": "#999999", "lw": 1.2,
                                "mutation_scale": 12})
        ax.add_patch(FancyBboxPatch((side_x, side_top - side_h), side_w, side_h,
                                    boxstyle="round,pad=0,rounding_size=0.06",
                                    fc="#fbf3ee" if excluded else "#f6f6f6",
                                    ec="#cc6677" if excluded else "#bbbbbb", lw=1.1))
        for j, (text, count, head) in enumerate(rows):
            ty = side_top - 0.1 - j * LINE_IN
            colour = INK if count != "0" else "#999999"
            ax.text(side_x + (0.12 if head else 0.32), ty, text, ha="left", va="top",
                    fontsize=9.5 if head else 9, fontweight="bold" if head else "normal",
                    color=colour)
            ax.text(side_x + side_w - 0.12, ty, count, ha="right", va="top",
                    fontsize=9.5 if head else 9, fontweight="bold" if head else "normal",
                    color=colour)
        y -= gap
    return _png(fig, dpi)


# --- calcium volumes --------------------------------------------------------------------------

@_styled
def segment_volumes(segments: pd.DataFrame, *, dpi: int, synthetic: bool) -> bytes:
    """Volumes of the eight segments (log axis, series with calcium there), side by side,
    with how many series have any calcium in each."""
    fig = _figure(4.6, synthetic)
    ax = fig.add_subplot()
    rng = np.random.default_rng(0)  # jitter only
    ticks, names = [], []
    for i, kind in enumerate(SEGMENT_KINDS):
        for j, side in enumerate(SIDES):
            x = i * 3 + j
            v = segments.loc[(segments["kind"] == kind) & (segments["side"] == side),
                             "volume_mm3"].dropna().to_numpy()
            pos = v[v > 0]
            if len(pos):
                ax.boxplot([pos], positions=[x], widths=0.7, showfliers=False,
                           patch_artist=True, medianprops={"color": INK, "lw": 1.6},
                           boxprops={"facecolor": SIDE_COLOURS[side] + "33",
                                     "edgecolor": SIDE_COLOURS[side]},
                           whiskerprops={"color": SIDE_COLOURS[side]},
                           capprops={"color": SIDE_COLOURS[side]})
                ax.scatter(x + rng.uniform(-0.22, 0.22, len(pos)), pos, s=11,
                           color=SIDE_COLOURS[side], alpha=0.75, lw=0, zorder=3)
            share = f"{len(pos)}/{len(v)}" if len(v) else "-"
            ax.annotate(share, (x, 0), xycoords=("data", "axes fraction"),
                        xytext=(0, 4), textcoords="offset points", ha="center",
                        fontsize=8.5, color=MUTED)
        ticks.append(i * 3 + 0.5)
        names.append(labels.kind(kind))
    ax.set_yscale("log")
    _plain_numbers(ax.yaxis)
    positive = segments["volume_mm3"][segments["volume_mm3"] > 0]
    if len(positive):  # room below the smallest volume for the counts
        ax.set_ylim(bottom=positive.min() / 4)
    ax.set_xticks(ticks, names)
    for tick, kind in zip(ax.get_xticklabels(), SEGMENT_KINDS, strict=True):
        tick.set_color(_rgb(kind) if kind != "cervical" else "#2e8b45")
        tick.set_fontweight("bold")
    ax.set_xlim(-1, len(SEGMENT_KINDS) * 3 - 1)
    ax.set_ylabel("calcium volume (mm³), series with calcium")
    ax.set_title("Calcium volume by segment and side "
                 "(numbers at the bottom: series with calcium / series measured)", loc="left")
    handles = [Patch(fc=SIDE_COLOURS[s] + "55", ec=SIDE_COLOURS[s],
                                        label=f"{s} ICA") for s in SIDES]
    ax.legend(handles=handles, loc="upper left")
    if not len(segments.dropna(subset=["volume_mm3"])) or not (segments["volume_mm3"] > 0).any():
        ax.text(0.5, 0.5, "no calcium measured", transform=ax.transAxes, ha="center",
                color=MUTED, fontsize=12)
        ax.set_yscale("linear")
    return _png(fig, dpi)


@_styled
def risk_groups(ok: pd.DataFrame, cutoffs: tuple[float, ...], groups: tuple[str, ...], *,
                dpi: int, synthetic: bool) -> bytes:
    """Total calcium per series, sorted, with its interval and risk group (left), and the
    number of series per group (right)."""
    fig = _figure(4.4, synthetic)
    left, right = fig.subfigures(1, 2, width_ratios=(2.6, 1))
    ax = left.add_subplot()
    order = list(groups) or sorted(ok["risk_group"].dropna().unique())
    colours = {g: RISK_COLOURS[min(i, len(RISK_COLOURS) - 1)] for i, g in enumerate(order)}
    d = ok.dropna(subset=["total_calcium_mm3"]).sort_values("total_calcium_mm3")
    x = np.arange(len(d))
    if len(d):
        low = d["total_calcium_mm3_low"].to_numpy(dtype=float)
        high = d["total_calcium_mm3_high"].to_numpy(dtype=float)
        mid = d["total_calcium_mm3"].to_numpy(dtype=float)
        has = np.isfinite(low) & np.isfinite(high)
        if has.any():
            level = d["calcium_interval_level"].dropna()
            ax.vlines(x[has], low[has], high[has], color="#999999", lw=1.1,
                      label=f"{100 * level.iloc[0]:.0f}% interval (segmenter)"
                      if len(level) else "interval")
        for g in order + sorted(set(d["risk_group"].dropna()) - set(order)):
            m = (d["risk_group"] == g).to_numpy()
            if m.any():
                ax.scatter(x[m], mid[m], s=22, color=colours.get(g, "#555555"), zorder=3,
                           edgecolor="white", lw=0.4, label=g)
        ax.set_yscale("symlog", linthresh=1, linscale=0.4)
        _plain_numbers(ax.yaxis)
        ax.set_ylim(bottom=0)
        for c in cutoffs:
            if c > 0:
                ax.axhline(c, color="#555555", ls="--", lw=0.9)
                ax.annotate(f"{c:g} mm³", (0, c), xycoords=("axes fraction", "data"),
                            xytext=(3, 2), textcoords="offset points", fontsize=8.5,
                            color="#555555")
        ax.legend(loc="upper left", fontsize=9, markerscale=1.6)
    ax.set_xlabel("series, sorted by total calcium")
    ax.set_ylabel("total ICA calcium (mm³)")
    ax.set_xticks([])
    ax.set_title("Total calcium per series, coloured by risk group", loc="left")
    bx = right.add_subplot()
    counts = ok["risk_group"].value_counts()
    names = [g for g in order if g in counts.index or groups] or list(counts.index)
    values = [int(counts.get(g, 0)) for g in names]
    bars = bx.barh(names[::-1], values[::-1], color=[colours.get(g, "#555555")
                                                     for g in names[::-1]])
    total = max(1, sum(values))
    for bar, v in zip(bars, values[::-1], strict=True):
        bx.annotate(f"{v} ({100 * v / total:.0f}%)", (bar.get_width(), bar.get_y()
                    + bar.get_height() / 2), xytext=(3, 0), textcoords="offset points",
                    va="center", fontsize=9)
    bx.set_xlim(0, max(values or [1]) * 1.45)
    bx.set_xlabel("series")
    bx.grid(axis="y", visible=False)
    bx.set_title("Series per risk group", loc="left")
    return _png(fig, dpi)


# --- landmarks and QC -----------------------------------------------------------------------

@_styled
def landmark_confidence(landmarks: pd.DataFrame, *, dpi: int, synthetic: bool) -> bytes:
    """The model's probability of each of the six landmarks, with the threshold below
    which a landmark is low confidence, and how many fell below it."""
    fig = _figure(4.0, synthetic)
    ax = fig.add_subplot()
    rng = np.random.default_rng(1)
    ticks, names = [], []
    for i, kind in enumerate(LANDMARK_KINDS):
        for j, side in enumerate(SIDES):
            x = i * 3 + j
            d = landmarks[(landmarks["kind"] == kind) & (landmarks["side"] == side)]
            p = d["probability"].dropna().to_numpy(dtype=float)
            if len(p):
                ax.boxplot([p], positions=[x], widths=0.7, showfliers=False,
                           patch_artist=True, medianprops={"color": INK, "lw": 1.6},
                           boxprops={"facecolor": SIDE_COLOURS[side] + "33",
                                     "edgecolor": SIDE_COLOURS[side]},
                           whiskerprops={"color": SIDE_COLOURS[side]},
                           capprops={"color": SIDE_COLOURS[side]})
                low = d["low_confidence"].fillna(False).astype(bool).to_numpy()
                jitter = x + rng.uniform(-0.22, 0.22, len(d))
                prob = d["probability"].to_numpy(dtype=float)
                ax.scatter(jitter[~low], prob[~low], s=11, color=SIDE_COLOURS[side],
                           alpha=0.7, lw=0, zorder=3)
                ax.scatter(jitter[low], prob[low], s=30, marker="x", color="#b8293d",
                           zorder=4, lw=1.4)
                ax.annotate(f"{int(low.sum())} low", (x, 1.0), xytext=(0, 4),
                            textcoords="offset points", ha="center", fontsize=8.5,
                            color="#b8293d" if low.any() else MUTED)
        ticks.append(i * 3 + 0.5)
        names.append(labels.kind(kind))
    for t in sorted(landmarks["confidence_threshold"].dropna().unique()):
        ax.axhline(t, color="#b8293d", ls="--", lw=1)
        ax.annotate(f"threshold {t:.2f}", (1, t), xycoords=("axes fraction", "data"),
                    xytext=(-3, 3), textcoords="offset points", ha="right", fontsize=8.5,
                    color="#b8293d")
    ax.set_xticks(ticks, names)
    ax.set_xlim(-1, len(LANDMARK_KINDS) * 3 - 1)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("model probability")
    ax.set_title("Landmark confidence (× low confidence: below the threshold or "
                 "implausible anatomy)", loc="left")
    handles = [Patch(fc=SIDE_COLOURS[s] + "55", ec=SIDE_COLOURS[s],
                                        label=f"{s}") for s in SIDES]
    ax.legend(handles=handles, loc="lower left", ncols=2)
    return _png(fig, dpi)


@_styled
def qc_flags(counts: dict[str, int], analysed: int, *, dpi: int, synthetic: bool) -> bytes:
    """How many analysed series raised each QC flag."""
    items = sorted(counts.items(), key=lambda kv: kv[1])
    fig = _figure(max(1.6, 0.36 * len(items) + 0.9), synthetic)
    ax = fig.add_subplot()
    if items:
        bars = ax.barh([f"{labels.flag(k)}  [{k}]" for k, _ in items], [v for _, v in items],
                       color="#e07b39")
        for bar, (_, v) in zip(bars, items, strict=True):
            ax.annotate(f"{v} ({100 * v / max(1, analysed):.0f}%)",
                        (bar.get_width(), bar.get_y() + bar.get_height() / 2), xytext=(3, 0),
                        textcoords="offset points", va="center", fontsize=9)
        ax.set_xlim(0, max(v for _, v in items) * 1.25)
    ax.grid(axis="y", visible=False)
    ax.set_xlabel(f"analysed series flagged (of {analysed})")
    ax.set_title("QC flags", loc="left")
    return _png(fig, dpi)


# --- change over time --------------------------------------------------------------------------

@_styled
def change_over_time(trajectories: pd.DataFrame, changes: pd.DataFrame, *, max_patients: int,
                     dpi: int, synthetic: bool) -> bytes:
    """Total calcium at each study of every patient followed up (left) and the annualised
    change by segment (right)."""
    fig = _figure(4.4, synthetic)
    has_rates = len(changes) and changes["annual_rate_mm3_per_year"].notna().any()
    left, right = fig.subfigures(1, 2, width_ratios=(1.5, 1)) if has_rates else (fig, None)
    ax = left.add_subplot()
    patients = list(dict.fromkeys(trajectories["patient_key"]))[:max_patients]
    for key in patients:
        d = trajectories[trajectories["patient_key"] == key].sort_values("study_date")
        v = d["total_calcium_mm3"].to_numpy(dtype=float)
        colour = ROSE if v[-1] > v[0] else (FELL if v[-1] < v[0] else "#888888")
        ax.plot(pd.to_datetime(d["study_date"]), v, "-o", color=colour, lw=1.2, ms=4,
                alpha=0.8)
    ax.set_yscale("symlog", linthresh=1, linscale=0.4)
    _plain_numbers(ax.yaxis)
    ax.set_ylim(bottom=0)
    ax.set_ylabel("total ICA calcium (mm³)")
    ax.set_xlabel("study date")
    ax.set_title(f"Patients with two or more studies ({len(patients)}): "
                 "orange rose, green fell", loc="left")
    if right is not None:
        bx = right.add_subplot()
        rng = np.random.default_rng(2)
        for i, kind in enumerate(SEGMENT_KINDS):
            for j, side in enumerate(SIDES):
                r = changes.loc[(changes["kind"] == kind) & (changes["side"] == side),
                                "annual_rate_mm3_per_year"].dropna().to_numpy(dtype=float)
                x = i * 3 + j
                bx.scatter(x + rng.uniform(-0.25, 0.25, len(r)), r, s=12, lw=0, alpha=0.8,
                           color=SIDE_COLOURS[side], label=side if i == 0 else None)
                if len(r):
                    bx.hlines(np.median(r), x - 0.35, x + 0.35, color=INK, lw=1.6)
        bx.axhline(0, color="#555555", lw=0.9)
        bx.set_yscale("symlog", linthresh=1, linscale=0.4)
        rates = changes["annual_rate_mm3_per_year"].dropna().abs()
        if len(rates):  # headroom above the points for the legend
            top = max(3.0, float(rates.max()))
            bx.set_ylim(-2 * top, 10 * top)
        _plain_numbers(bx.yaxis)
        bx.set_xticks([i * 3 + 0.5 for i in range(len(SEGMENT_KINDS))],
                      [labels.kind(k) for k in SEGMENT_KINDS], fontsize=9)
        bx.set_ylabel("change (mm³ per year)")
        bx.set_title("Annualised change by segment (bar: median)", loc="left")
        bx.legend(loc="upper right", fontsize=8.5, scatterpoints=1, ncols=2, frameon=True,
                  framealpha=0.9, edgecolor="none")
    return _png(fig, dpi)
