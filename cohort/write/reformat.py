"""Coronal and sagittal reformats of a head-CT volume, with landmark planes and calcium,
as one image ready to save as PNG (Pillow only).

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
from PIL import Image, ImageDraw, ImageFont

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


def _font(px: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=px)
    except (TypeError, OSError, ImportError):  # Pillow without FreeType: fixed bitmap font
        return ImageFont.load_default()


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
    mm = style.mm_per_pixel
    font, small = _font(style.font_px), _font(max(8, style.font_px - 2))
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
    images, lefts = [], []  # panel images, and the first resampled column each shows
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
        images.append(Image.fromarray(rgb))
        lefts.append(x0)

    pad, gap = 8, 12
    line_h = style.font_px + 6
    title_h = line_h + 10  # room for the plane ticks above the panels
    panel_h = bottom - top
    width = max(2 * pad + sum(im.width for im in images) + gap * (len(images) - 1), 760)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    captions = [_wrap(p.caption, im.width, measure, small) for p, im in zip(panels, images,
                                                                            strict=True)]
    caption_h = max(len(c) for c in captions) * line_h
    height = 2 * pad + title_h + panel_h + 8 + caption_h + 3 * line_h + 6
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    draw.text((pad, pad), title, fill=TEXT, font=font)
    y0, x = pad + title_h, pad
    for p, im, x0, (_, _, row_of_slice), caption in zip(panels, images, lefts, res, captions,
                                                          strict=True):
        canvas.paste(im, (x, y0))
        lines = {}
        for side in p.sides:
            for kind in LANDMARK_KINDS:
                k = landmark_slices.get(f"{side}_{kind}")
                if k is not None and 0 <= k < len(row_of_slice):
                    lines[side, kind] = int(row_of_slice[k]) - top
        split = None if p.mid_column is None else _to_px(p.mid_column, p.spacing, mm) - x0
        _landmark_lines(draw, lines, (x, y0), im.size, split, style, small)
        for t in p.ticks:  # where the other panels' slabs cut this one
            tx = x + _to_px(t, p.spacing, mm) - x0
            if x <= tx < x + im.width:
                draw.polygon([(tx - 4, y0 - 7), (tx + 4, y0 - 7), (tx, y0 - 1)], fill=TICK)
                draw.polygon([(tx - 4, y0 + panel_h + 6), (tx + 4, y0 + panel_h + 6),
                              (tx, y0 + panel_h)], fill=TICK)
        draw.text((x + 3, y0 + 2), p.letters[0], fill=TEXT, font=font)
        draw.text((x + im.width - 3 - draw.textlength(p.letters[1], font=font), y0 + 2),
                  p.letters[1], fill=TEXT, font=font)
        for n, text in enumerate(caption):
            draw.text((x, y0 + panel_h + 8 + n * line_h), text, fill=TEXT, font=small)
        x += im.width + gap
    _legend(draw, pad, y0 + panel_h + 12 + caption_h, line_h, style, small)
    return canvas


def _landmark_lines(draw: ImageDraw.ImageDraw, lines: dict[tuple[str, str], int], origin,
                    size, split: int | None, style: ReformatStyle, font) -> None:
    """Landmark planes as lines across a panel: right dashed, left solid, tagged at the
    edge; with ``split`` (coronal) each side's lines cover its own half of the panel."""
    (x, y0), (w, h) = origin, size
    for (side, kind), y in lines.items():
        if not 0 <= y < h:
            continue
        xa, xb = 0, w
        if split is not None:
            xa, xb = (0, split) if side == "right" else (split, w)
        colour = SEGMENT_COLOURS[LANDMARK_STARTS[kind]]
        _hline(draw, x + xa, x + xb - 1, y0 + y, colour,
               style.dash_px if side == "right" else None)
        tag = f"{side[0].upper()} {LANDMARK_TAGS[kind]}"
        tx = x + xa + 2 if side == "right" else x + xb - draw.textlength(tag, font=font) - 2
        draw.text((tx, y0 + y - style.font_px - 1), tag, fill=colour, font=font,
                  stroke_width=1, stroke_fill=BACKGROUND)


def _wrap(text: str, width: int, draw: ImageDraw.ImageDraw, font) -> list[str]:
    """``text`` in lines no wider than ``width`` pixels, broken between words."""
    lines = [""]
    for word in text.split(" "):
        trial = f"{lines[-1]} {word}".strip()
        if lines[-1] and draw.textlength(trial, font=font) > width:
            lines.append(word)
        else:
            lines[-1] = trial
    return lines


def _to_px(index: float, spacing: float, mm: float) -> int:
    """Output pixel of a (fractional) voxel index along an axis resampled to ``mm``."""
    return int(round((index + 0.5) * spacing / mm - 0.5))


def _hline(draw: ImageDraw.ImageDraw, xa: int, xb: int, y: int, colour, dash) -> None:
    if dash is None:
        draw.line([(xa, y), (xb, y)], fill=colour, width=1)
        return
    on, off = dash
    xa, xb = int(xa), int(xb)
    for s in range(xa, xb + 1, on + off):
        draw.line([(s, y), (min(s + on - 1, xb), y)], fill=colour, width=1)


def _legend(draw: ImageDraw.ImageDraw, x0: int, y: int, line_h: int, style: ReformatStyle,
            small) -> None:
    x = x0
    draw.text((x, y), "landmark planes:", fill=TEXT, font=small)
    x += draw.textlength("landmark planes:", font=small) + 8
    for kind in LANDMARK_KINDS:
        colour = SEGMENT_COLOURS[LANDMARK_STARTS[kind]]
        draw.line([(x, y + line_h // 2), (x + 24, y + line_h // 2)], fill=colour, width=2)
        label = f"{LANDMARK_TAGS[kind]} {kind.replace('_', ' ')}"
        draw.text((x + 28, y), label, fill=colour, font=small)
        x += 28 + draw.textlength(label, font=small) + 14
    solid = "left side solid"
    draw.line([(x, y + line_h // 2), (x + 24, y + line_h // 2)], fill=TEXT)
    draw.text((x + 28, y), solid, fill=TEXT, font=small)
    x += 28 + draw.textlength(solid, font=small) + 14
    _hline(draw, x, x + 24, y + line_h // 2, TEXT, style.dash_px)
    draw.text((x + 28, y), "right side dashed", fill=TEXT, font=small)

    y += line_h
    x = x0
    draw.text((x, y), "calcium by segment:", fill=TEXT, font=small)
    x += draw.textlength("calcium by segment:", font=small) + 8
    for kind in SEGMENT_KINDS:
        colour = SEGMENT_COLOURS[kind]
        draw.rectangle([x, y + 3, x + 10, y + line_h - 5], fill=colour)
        draw.text((x + 14, y), kind, fill=colour, font=small)
        x += 14 + draw.textlength(kind, font=small) + 14
    note = "(a plane's colour = the segment that begins there)"
    draw.text((x, y), note, fill=TEXT, font=small)

    y += line_h
    bar = int(round(50 / style.mm_per_pixel))
    draw.line([(x0, y + line_h // 2), (x0 + bar, y + line_h // 2)], fill=TEXT, width=3)
    draw.text((x0 + bar + 6, y), "50 mm", fill=TEXT, font=small)
    w = style.window
    draw.text((x0 + bar + 60, y),
              f"grey: compound window, {w[0][0]:g}..{w[1][0]:g} HU soft tissue, "
              f"{w[1][0]:g}..{w[-1][0]:g} HU bone and calcium; square pixels of "
              f"{style.mm_per_pixel:g} mm", fill=TEXT, font=small)
