"""Coronal and sagittal reformats of a head-CT volume, with landmark planes and calcium,
as one image ready to save as PNG.

The projections, resampling and calcium painting are ours (numpy and Pillow); the figure
around them (title, panel placement, landmark lines and tags, legend, scale bar) is drawn by
matplotlib's Agg renderer at 72 dpi, so one point is one output pixel and each panel's
pixels are placed unresampled (``Figure.figimage``).

Each panel is a maximum-intensity projection (MIP) over a thin slab, so the calcium in the
carotid walls and the bony landmarks beside the arteries show although no single plane
holds them. Panels are resampled to square output pixels, so a 0.45 x 0.45 x 0.625 mm grid
keeps the head's true proportions (millimetres, not voxels).

The six landmark planes are horizontal lines, right side dashed and left side solid, each in
the colour of the segment that *begins* at it (the distal boundary rule of
`cohort.anatomy`). Calcium is painted in the colour of its segment when a label map is
given, so a reader sees at a glance whether each calcification lies between its lines.

Display convention is radiological: the coronal panel shows the patient's right on the
image's left, sagittal panels show anterior on the left, superior is up.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from PIL import Image

from cohort.anatomy import LANDMARK_KINDS, LANDMARKS, SEGMENT_KINDS, SIDES
from cohort.geometry import Grid

SEGMENT_COLOURS: dict[str, tuple[int, int, int]] = {
    "cervical": (70, 210, 90),
    "petrous": (60, 160, 255),
    "cavernous": (255, 160, 20),
    "supraclinoid": (240, 60, 170),
}
#: the segment that begins at each landmark plane; the line is drawn in its colour
LANDMARK_STARTS: dict[str, str] = {
    "carotid_canal": "petrous",
    "petrolingual": "cavernous",
    "anterior_clinoid": "supraclinoid",
}
LANDMARK_TAGS = {"carotid_canal": "CC", "petrolingual": "PL", "anterior_clinoid": "AC"}
BODY_HU = -400.0  # above this a projected pixel is the patient, not air or padding
BACKGROUND = (0, 0, 0)
TEXT = (235, 235, 235)
TICK = (255, 230, 0)  # marks where the other panels' slabs lie
DPI = 72  # one point = one pixel: font sizes, line widths and dashes below are in pixels


@dataclass(frozen=True)
class ReformatStyle:
    """How the figure looks; the defaults suit a 512 x 512 head CT."""

    slab_mm: float = 8.0  # thickness of each maximum-intensity slab
    mm_per_pixel: float = 0.4  # output pixel size, the same across and down
    # grey scale: piecewise linear through (HU, grey 0..1) knots: soft tissue and brain in
    # the lower part, bone and calcium in the upper part (one compound window)
    window: tuple[tuple[float, float], ...] = ((-150.0, 0.0), (150.0, 0.45), (2000.0, 1.0))
    side_offset_mm: float = 20.0  # ICA planes from the midline when no labels show where
    crop_to_body: bool = True  # drop air above, below and beside the head
    font_px: int = 13
    dash_px: tuple[int, int] = (6, 4)  # right-side lines: on, off


@dataclass(frozen=True)
class Planes:
    """Where the slabs are centred, in voxel indices of the volume as given."""

    coronal_row: int  # j
    sagittal_columns: tuple[int, int]  # i through the right and the left ICA
    midline_column: float  # i of the mid-sagittal plane


def choose_planes(hu: np.ndarray, grid: Grid, labels: np.ndarray | None = None, *,
                  style: ReformatStyle | None = None) -> Planes:
    """Slab centres that show the carotid arteries.

    The midline is the centroid of the bone (> 300 HU). With a label map: the coronal row
    and, per side, the sagittal column whose slab holds the most labelled calcium (a side
    without calcium mirrors the other across the midline). Without one: the coronal row
    through the image centre, sagittal columns ``side_offset_mm`` either side of the midline.
    """
    style = style or ReformatStyle()
    _check(hu, grid, labels)
    sx, sy, _ = grid.spacing
    _, nj, ni = hu.shape
    bone = hu[::4] > 300  # every 4th slice is plenty for a centroid
    mid = float(np.nonzero(bone)[2].mean()) if bone.any() else (ni - 1) / 2
    to_left = 1 if grid.col_step[0] > 0 else -1  # +x is the patient's left (LPS)
    offset = style.side_offset_mm / sx
    cols = {"right": mid - to_left * offset, "left": mid + to_left * offset}
    coronal = nj // 2
    if labels is not None and labels.any():
        coronal = _peak((labels > 0).sum(axis=(0, 2)), style.slab_mm / sy)
        per_side = len(SEGMENT_KINDS)
        found = {}
        for n, side in enumerate(SIDES):
            mine = (labels > n * per_side) & (labels <= (n + 1) * per_side)
            if mine.any():
                found[side] = _peak(mine.sum(axis=(0, 1)), style.slab_mm / sx)
        for side, other in (("right", "left"), ("left", "right")):
            if side in found:
                cols[side] = found[side]
            elif other in found:
                cols[side] = 2 * mid - found[other]
    right, left = (int(np.clip(round(cols[s]), 0, ni - 1)) for s in SIDES)
    return Planes(coronal, (right, left), mid)


def reformat_figure(hu: np.ndarray, grid: Grid, landmark_slices: Mapping[str, int | None],
                    labels: np.ndarray | None = None, *, planes: Planes | None = None,
                    title: str = "", style: ReformatStyle | None = None) -> Image.Image:
    """A coronal and two sagittal slab MIPs side by side, with landmark planes and calcium.

    Args:
        hu: CT numbers, [k, j, i] on ``grid``, slice 0 the most inferior.
        grid: the volume's geometry; must be axial and axis-aligned (no gantry tilt).
        landmark_slices: landmark name (`cohort.anatomy.LANDMARKS`) -> slice index; a
            missing or None value, or one outside the volume, is not drawn.
        labels: optional segment label map on the same grid (codes of
            `cohort.anatomy.SEGMENT_LABELS`); its voxels are painted in segment colours.
        planes: slab centres; by default `choose_planes`.
        title: the first line of the figure.
        style: look of the figure.

    Returns:
        An RGB image.

    Raises:
        ValueError: shapes disagree, the grid is tilted or oblique, or a landmark name is
            unknown.
    """
    style = style or ReformatStyle()
    _check(hu, grid, labels)
    unknown = set(landmark_slices) - set(LANDMARKS)
    if unknown:
        raise ValueError(f"unknown landmark names {sorted(unknown)}; expected {LANDMARKS}")
    planes = planes or choose_planes(hu, grid, labels, style=style)
    sx, sy, sz = grid.spacing
    _, nj, ni = hu.shape
    flip_i, flip_j = grid.col_step[0] < 0, grid.row_step[1] < 0

    def slab(axis: int, centre: int, step: float):
        half = max(0, int(round(style.slab_mm / step / 2 - 0.5)))
        lo, hi = max(0, centre - half), min(hu.shape[axis], centre + half + 1)
        idx = [slice(None)] * 3
        idx[axis] = slice(lo, hi)
        grey = hu[tuple(idx)].max(axis=axis)
        lab = None if labels is None else labels[tuple(idx)].max(axis=axis)
        flip = flip_i if axis == 1 else flip_j
        if flip:  # i toward the patient's left, j toward posterior
            grey = grey[:, ::-1]
            lab = None if lab is None else lab[:, ::-1]
        return grey, lab

    jc, (ir, il) = planes.coronal_row, planes.sagittal_columns
    x_mid = float(grid.world(planes.midline_column, 0, 0)[0])

    def shown(i: float) -> float:  # column index -> horizontal position in the panel
        return ni - 1 - i if flip_i else i

    def shown_j(j: float) -> float:
        return nj - 1 - j if flip_j else j

    grey, lab = slab(1, jc, sy)
    panels = [_Panel(grey, lab, sx, SIDES, ("R", "L"), mid_column=shown(planes.midline_column),
                     ticks=(shown(ir), shown(il)), caption=(
        f"coronal, {style.slab_mm:g} mm MIP at y = {grid.world(0, jc, 0)[1]:.0f} mm"))]
    for side, col in (("right", ir), ("left", il)):
        grey, lab = slab(2, col, sx)
        x = float(grid.world(col, 0, 0)[0])
        panels.append(_Panel(grey, lab, sy, (side,), ("A", "P"), mid_column=None,
                             ticks=(shown_j(jc),), caption=(
            f"sagittal through the {side} ICA, {style.slab_mm:g} mm MIP at x = {x:.0f} mm "
            f"({abs(x - x_mid):.0f} mm from midline)")))
    return _compose(panels, sz, landmark_slices, title, style)


@dataclass
class _Panel:
    grey: np.ndarray  # (k, horizontal) MIP in HU, slice 0 inferior
    labels: np.ndarray | None
    spacing: float  # mm along the horizontal axis
    sides: tuple[str, ...]  # whose landmark lines to draw
    letters: tuple[str, str]  # orientation at the image's left and right edges
    mid_column: float | None  # coronal: the split between right- and left-side lines
    ticks: tuple[float, ...]  # horizontal positions of the other panels' planes
    caption: str


def _check(hu: np.ndarray, grid: Grid, labels: np.ndarray | None) -> None:
    if hu.ndim != 3 or tuple(hu.shape) != tuple(grid.shape):
        raise ValueError(f"volume shape {hu.shape} does not match its grid {grid.shape}")
    if labels is not None and labels.shape != hu.shape:
        raise ValueError(f"label map shape {labels.shape} differs from the volume's {hu.shape}")
    m = grid.matrix
    off = np.abs(m - np.diag(np.diag(m))).max()
    if off > 1e-3 * min(grid.spacing):
        raise ValueError("reformats need an axial, axis-aligned grid (no gantry tilt, no "
                         f"oblique orientation; this one is tilted {grid.tilt_deg:.1f} deg); "
                         "resample the volume onto grid.axial_equivalent() first")
    if grid.slice_step[2] <= 0:
        raise ValueError("slices must go upward (slice 0 the most inferior); reverse the "
                         "volume along k first")


def _peak(profile: np.ndarray, width: float) -> int:
    """Centre of the slab (about ``width`` samples) holding the most of ``profile``: the
    middle of the first run of maximal sums."""
    half = max(0, int(round(width / 2 - 0.5)))
    sums = np.convolve(profile.astype(float), np.ones(2 * half + 1), mode="same")
    best = np.flatnonzero(sums >= sums.max() - 1e-9)
    run = best[: int(np.argmax(np.diff(np.r_[best, best[-1] + 2]) > 1)) + 1]
    return int((run[0] + run[-1]) // 2)


def _grey(hu: np.ndarray, window) -> np.ndarray:
    knots_hu, knots_grey = zip(*window, strict=True)
    return np.rint(255 * np.interp(hu, knots_hu, knots_grey)).astype(np.uint8)


def _resample(p: _Panel, sz: float, mm: float):
    """Panel -> (RGB array with calcium painted, body mask, output row of each slice)."""
    nk, nh = p.grey.shape
    out_h, out_w = max(1, round(nk * sz / mm)), max(1, round(nh * p.spacing / mm))
    up = np.ascontiguousarray(p.grey[::-1], dtype=np.float32)  # superior at the top
    hu = np.asarray(Image.fromarray(up).resize((out_w, out_h), Image.BILINEAR))
    lab = None
    if p.labels is not None:
        src = np.ascontiguousarray(p.labels[::-1], dtype=np.uint8)
        lab = np.asarray(Image.fromarray(src).resize((out_w, out_h), Image.NEAREST)).copy()
        # every labelled voxel shows, even where the output pixel is larger than the voxel
        rows, cols = np.nonzero(src)
        r = np.minimum(((rows + 0.5) * out_h / nk).astype(int), out_h - 1)
        c = np.minimum(((cols + 0.5) * out_w / nh).astype(int), out_w - 1)
        lab[r, c] = np.maximum(lab[r, c], src[rows, cols])
    k = np.arange(nk)
    row_of_slice = np.floor((nk - 1 - k + 0.5) * out_h / nk).astype(int)
    return hu, lab, row_of_slice


def _compose(panels: list[_Panel], sz: float, landmark_slices, title: str,
             style: ReformatStyle) -> Image.Image:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.transforms import Affine2D

    mm = style.mm_per_pixel
    small = max(8, style.font_px - 2)
    res = [_resample(p, sz, mm) for p in panels]
    # one vertical range for all panels, so that a landmark line is at one height in all
    body_rows = np.zeros(res[0][0].shape[0], dtype=bool)
    for hu, _, _ in res:
        body_rows |= (hu > BODY_HU).any(axis=1)
    margin = int(round(6 / mm))
    top, bottom = 0, len(body_rows)
    if style.crop_to_body and body_rows.any():
        rows = np.flatnonzero(body_rows)
        top, bottom = max(0, rows[0] - margin), min(len(body_rows), rows[-1] + margin + 1)
    images, lefts = [], []  # panel images (h, w, 3), and the first resampled column each shows
    for hu, lab, _ in res:
        x0, x1 = 0, hu.shape[1]
        cols = np.flatnonzero((hu[top:bottom] > BODY_HU).any(axis=0))
        if style.crop_to_body and cols.size:
            x0, x1 = max(0, cols[0] - margin), min(hu.shape[1], cols[-1] + margin + 1)
        rgb = np.repeat(_grey(hu[top:bottom, x0:x1], style.window)[..., None], 3, axis=2)
        if lab is not None:
            sub = lab[top:bottom, x0:x1]
            for code in np.unique(sub[sub > 0]):
                kind = SEGMENT_KINDS[(int(code) - 1) % len(SEGMENT_KINDS)]
                rgb[sub == code] = SEGMENT_COLOURS[kind]
        images.append(rgb)
        lefts.append(x0)

    # the page, in pixels from its top-left corner
    pad, gap = 8, 12
    line_h = style.font_px + 6
    title_h = line_h + 10  # room for the plane ticks above the panels
    panel_h = bottom - top
    scratch = Figure(dpi=DPI)
    renderer = FigureCanvasAgg(scratch).get_renderer()
    captions = [_wrap(p.caption, im.shape[1], renderer, small) for p, im in zip(panels, images,
                                                                                 strict=True)]
    caption_h = max(len(c) for c in captions) * line_h
    legend_sizes = [leg.get_window_extent(renderer).size for leg in _legends(scratch, style)]
    legend_top = pad + title_h + panel_h + 8 + caption_h + 4
    width = max(2 * pad + sum(im.shape[1] for im in images) + gap * (len(images) - 1),
                2 * pad + int(np.ceil(max(w for w, _ in legend_sizes))), 760)
    height = legend_top + int(np.ceil(sum(h for _, h in legend_sizes))) + 2 * len(
        legend_sizes) + pad

    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, facecolor=_rgb(BACKGROUND))
    canvas = FigureCanvasAgg(fig)
    page = Affine2D().scale(1, -1).translate(0, height)  # (x, y down) -> display pixels
    fig.text(pad, pad, title, transform=page, va="top", color=_rgb(TEXT),
             fontsize=style.font_px)
    y0, x = pad + title_h, pad
    for p, im, x0, (_, _, row_of_slice), caption in zip(panels, images, lefts, res, captions,
                                                          strict=True):
        h, w = im.shape[:2]
        fig.figimage(im, xo=x, yo=height - y0 - h, origin="upper", zorder=0)
        ax = fig.add_axes((x / width, (height - y0 - h) / height, w / width, h / height),
                          zorder=1)  # data coordinates = the panel's pixels, row 0 on top
        ax.set_axis_off()
        ax.set_xlim(-0.5, w - 0.5)
        ax.set_ylim(h - 0.5, -0.5)
        lines = {}
        for side in p.sides:
            for kind in LANDMARK_KINDS:
                k = landmark_slices.get(f"{side}_{kind}")
                if k is not None and 0 <= k < len(row_of_slice):
                    lines[side, kind] = int(row_of_slice[k]) - top
        split = None if p.mid_column is None else _to_px(p.mid_column, p.spacing, mm) - x0
        _landmark_lines(ax, lines, (w, h), split, style)
        for t in p.ticks:  # where the other panels' slabs cut this one
            tx = _to_px(t, p.spacing, mm) - x0
            if 0 <= tx < w:
                ax.plot([tx], [-5], marker="v", color=_rgb(TICK), markersize=8, clip_on=False)
                ax.plot([tx], [h + 4], marker="^", color=_rgb(TICK), markersize=8,
                        clip_on=False)
        for at, letter, align in ((2, p.letters[0], "left"), (w - 3, p.letters[1], "right")):
            ax.text(at, 1, letter, ha=align, va="top", color=_rgb(TEXT), fontsize=style.font_px)
        for n, text in enumerate(caption):
            fig.text(x, y0 + panel_h + 8 + n * line_h, text, transform=page, va="top",
                     color=_rgb(TEXT), fontsize=small)
        x += w + gap
    y = legend_top
    for leg, (_, h) in zip(_legends(fig, style), legend_sizes, strict=True):
        leg.set_bbox_to_anchor((pad, y), transform=page)
        y += int(np.ceil(h)) + 2
    canvas.draw()
    return Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3].copy())


def _rgb(colour: tuple[int, int, int]) -> tuple[float, ...]:
    return tuple(c / 255 for c in colour)


def _landmark_lines(ax, lines: dict[tuple[str, str], int], size: tuple[int, int],
                    split: int | None, style: ReformatStyle) -> None:
    """Landmark planes as 1-pixel lines across a panel (axes in pixel coordinates): right
    dashed, left solid, tagged above at the edge; with ``split`` (coronal) each side's
    lines cover its own half of the panel."""
    from matplotlib.patheffects import withStroke

    w, h = size
    for (side, kind), y in lines.items():
        if not 0 <= y < h:
            continue
        xa, xb = 0, w
        if split is not None:
            xa, xb = (0, split) if side == "right" else (split, w)
        colour = _rgb(SEGMENT_COLOURS[LANDMARK_STARTS[kind]])
        # one pixel row exactly: no antialiasing, and no snapping (it rounds a pixel centre
        # half a pixel on, into the next row)
        ax.plot([xa - 0.5, xb - 0.5], [y, y], color=colour, linewidth=1, antialiased=False,
                snap=False, solid_capstyle="butt", dash_capstyle="butt",
                linestyle=(0, style.dash_px) if side == "right" else "-")
        tag = f"{side[0].upper()} {LANDMARK_TAGS[kind]}"
        right = side == "right"
        ax.text(xa + 2 if right else xb - 3, y - 1.5, tag, ha="left" if right else "right",
                va="bottom", color=colour, fontsize=style.font_px,
                path_effects=[withStroke(linewidth=2, foreground=_rgb(BACKGROUND))])


def _wrap(text: str, width: int, renderer, size: float) -> list[str]:
    """``text`` in lines no wider than ``width`` pixels, broken between words."""
    from matplotlib.font_manager import FontProperties

    font = FontProperties(size=size)

    def wide(s: str) -> float:
        return renderer.get_text_width_height_descent(s, font, ismath=False)[0]

    lines = [""]
    for word in text.split(" "):
        trial = f"{lines[-1]} {word}".strip()
        if lines[-1] and wide(trial) > width:
            lines.append(word)
        else:
            lines[-1] = trial
    return lines


def _to_px(index: float, spacing: float, mm: float) -> int:
    """Output pixel of a (fractional) voxel index along an axis resampled to ``mm``."""
    return int(round((index + 0.5) * spacing / mm - 0.5))


def _legends(fig, style: ReformatStyle) -> list:
    """The figure's legends, top to bottom (placed by the caller): landmark planes, calcium
    by segment, and a 50 mm scale bar (a legend handle exactly 50 mm long) with the grey
    window."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    size = max(8, style.font_px - 2)
    common = dict(loc="upper left", frameon=False, fontsize=size, title_fontsize=size,
                  alignment="left", borderpad=0, borderaxespad=0, handletextpad=0.5,
                  columnspacing=1.2)
    plane_colours = [_rgb(SEGMENT_COLOURS[LANDMARK_STARTS[k]]) for k in LANDMARK_KINDS]
    text = _rgb(TEXT)
    planes = fig.legend(
        [Line2D([], [], color=c, linewidth=2) for c in plane_colours]
        + [Line2D([], [], color=text, linewidth=1),
           Line2D([], [], color=text, linewidth=1, linestyle=(0, style.dash_px))],
        [f"{LANDMARK_TAGS[k]} {k.replace('_', ' ')}" for k in LANDMARK_KINDS]
        + ["left side solid", "right side dashed"],
        labelcolor=[*plane_colours, text, text], ncols=5, handlelength=2.0,
        title="landmark planes (a plane's colour = the segment that begins there):", **common)
    calcium_colours = [_rgb(SEGMENT_COLOURS[k]) for k in SEGMENT_KINDS]
    calcium = fig.legend([Patch(color=c) for c in calcium_colours], list(SEGMENT_KINDS),
                         labelcolor=calcium_colours, ncols=len(SEGMENT_KINDS),
                         handlelength=1.0, title="calcium by segment:", **common)
    w = style.window
    scale = fig.legend(
        [Line2D([], [], color=text, linewidth=3, solid_capstyle="butt")],
        [f"50 mm; grey: compound window, {w[0][0]:g}..{w[1][0]:g} HU soft tissue, "
         f"{w[1][0]:g}..{w[-1][0]:g} HU bone and calcium; square pixels of "
         f"{style.mm_per_pixel:g} mm"],
        labelcolor=[text], handlelength=50 / style.mm_per_pixel / size, **common)
    for leg in (planes, calcium, scale):
        leg.get_title().set_color(text)
    return [planes, calcium, scale]
