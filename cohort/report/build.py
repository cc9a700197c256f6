"""`write_report`: gather the tables, draw the figures, copy the QC pictures of flagged
series and write the page, all under one folder (``OUT/report/`` by default)::

    index.html            the report; opens from a local folder as it is
    figures/<name>.png    its figures
    qc/<series>.png       the QC pictures of the flagged series it shows (downscaled)

The page is written last, so a report folder with an ``index.html`` has all its pictures.
"""

from __future__ import annotations

import io
import logging
import re
from collections import Counter

from PIL import Image

from cohort.errors import StorageError
from cohort.report import figures as draw
from cohort.report.config import ReportConfig
from cohort.report.data import ReportData, gather
from cohort.report.html import FIGURES, GENERATOR, GalleryItem, render
from cohort.storage import StorageOptions, filesystem, join, read_bytes, redact, write_bytes

logger = logging.getLogger(__name__)

REPORT = "report"  # the report's folder under the output URL
PAGE = "index.html"


def write_report(out_url: str, options: StorageOptions | None = None,
                 config: ReportConfig | None = None, report_url: str | None = None) -> str:
    """Write the report of every published run under ``out_url``; return the page's URL.

    Args:
        out_url: the ``--out`` of `cohort run` (a local folder or s3://).
        options: endpoint and credentials for s3://.
        config: sizes and caps (`ReportConfig`).
        report_url: where to write it; default ``<out_url>/report``.

    Raises:
        ConfigError: ``out_url`` holds no published run.
        StorageError: the report cannot be written.
    """
    config = config or ReportConfig()
    data = gather(out_url, options, config)
    report_url = report_url or join(out_url, REPORT)
    _remove_previous(report_url, options)
    drawn = _figures(data, config)
    for key, png in drawn.items():
        write_bytes(join(report_url, FIGURES[key]), png, options)
    gallery = _gallery(data, out_url, report_url, options, config)
    page = render(data, set(drawn), gallery, max_listed=config.max_listed)
    url = join(report_url, PAGE)
    write_bytes(url, page.encode("utf-8"), options)
    logger.info("report of %d runs written to %s", len(data.runs), redact(url))
    return url


def _remove_previous(report_url: str, options: StorageOptions | None) -> None:
    """Remove the pictures of an earlier report in the folder (a QC picture of a series no
    longer flagged would linger): only when its page says `cohort report` made it."""
    fs, path = filesystem(report_url, options)
    try:
        page = fs.cat_file(f"{path}/{PAGE}").decode("utf-8", "replace")
    except (FileNotFoundError, OSError):
        return
    if f'<meta name="generator" content="{GENERATOR}">' not in page:
        return
    for folder in ("figures", "qc"):
        if fs.exists(f"{path}/{folder}"):
            fs.rm(f"{path}/{folder}", recursive=True)


def _figures(data: ReportData, config: ReportConfig) -> dict[str, bytes]:
    kw = {"dpi": config.dpi, "synthetic": bool(data.synthetic)}
    out = {"flow": draw.flow_diagram(data.flow, **kw)}
    if len(data.segments):
        out["volumes"] = draw.segment_volumes(data.segments, **kw)
    if len(data.with_volumes):
        cutoffs, groups = data.risk
        out["risk"] = draw.risk_groups(data.with_volumes, cutoffs, groups, **kw)
    if len(data.trajectories) or len(data.changes):
        out["change"] = draw.change_over_time(data.trajectories, data.changes,
                                              max_patients=config.max_trajectories, **kw)
    if len(data.landmarks):
        out["landmarks"] = draw.landmark_confidence(data.landmarks, **kw)
    flags = Counter(f for fs in data.ok["qc_flags"] if fs is not None for f in fs)
    if flags:
        out["qc"] = draw.qc_flags(dict(flags), data.flow.analysed, **kw)
    return out


def _gallery(data: ReportData, out_url: str, report_url: str,
             options: StorageOptions | None, config: ReportConfig) -> list[GalleryItem]:
    """The flagged series shown as pictures (most flags first), each picture copied next
    to the page, downscaled; a picture that cannot be read is shown as missing."""
    # under OUT/report the pictures link to the originals, full size, in the run folders
    beside = report_url.rstrip("/") == join(out_url, REPORT).rstrip("/")
    flagged = data.flagged.assign(n_flags=data.flagged["qc_flags"].map(len))
    flagged = flagged.sort_values(["n_flags", "series_key"], ascending=[False, True])
    items = []
    for r in flagged.head(config.max_gallery).itertuples():
        picture = None
        if isinstance(r.qc_picture, str) and r.qc_picture:  # NaN or None: not drawn
            name = f"qc/{_safe(r.series_key)}.png"
            try:
                png = _downscale(read_bytes(join(out_url, r.qc_picture), options),
                                 config.qc_width_px)
                write_bytes(join(report_url, name), png, options)
                picture = name
            except (StorageError, OSError) as e:
                logger.warning("QC picture of %s not copied: %s", r.series_key, e)
        items.append(GalleryItem(
            series_key=r.series_key, flags=tuple(r.qc_flags),
            low_confidence=tuple(r.low_confidence_landmarks if r.low_confidence_landmarks
                                 is not None else ()),
            total_mm3=r.total_calcium_mm3, risk_group=r.risk_group, run_id=r.run_id,
            picture=picture, original=f"../{r.qc_picture}" if beside and picture else picture))
    return items


def _safe(key: str) -> str:
    """A file name for a series key (``UID#k`` for stacks: '#' would end a URL)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", key)


def _downscale(png: bytes, width: int) -> bytes:
    """The picture at most ``width`` pixels wide, as a palette PNG (CT greys and a few
    overlay colours lose nothing visible in 256 colours; the file is a third)."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    if image.width > width:
        image = image.resize((width, round(image.height * width / image.width)),
                             Image.Resampling.LANCZOS)
    out = io.BytesIO()
    # the octree keeps the overlays' few saturated colours (median cut greys them)
    image.quantize(colors=256, method=Image.Quantize.FASTOCTREE).save(out, format="PNG",
                                                                      optimize=True)
    return out.getvalue()
