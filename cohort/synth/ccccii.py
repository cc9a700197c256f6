"""`cohort synth ccccii`: a synthetic stand-in for Clean-CC-CCII, in its folder layout.

    <out>/<class>/<patient_id>/<scan_id>/<k>.png   (or .jpg), k = 0, 1, ... unpadded
    <out>/ground_truth.csv                         scan, class, slices, findings
    <out>/_SUCCESS.json                            {"synthetic": true, ...}, written last

Each scan is a chest CT in a lung window (8-bit slices, air black): the body outline with a
fat layer, two lungs whose cross-section grows from apex to base (the right one shortened by
the liver dome), vessels in the lungs, the mediastinum (trachea above, heart and aorta
below), the spine, and ribs cut obliquely (their cross-sections move from slice to slice).
Class-dependent findings, always inside the lungs:

* NCP: several bilateral, peripheral ground-glass opacities (faint, hazy, near the pleura);
* CP: a lobar consolidation in one lung (dense, bounded by a fissure plane) with a few air
  bronchograms;
* Normal: none. Every class gets distractors: vessels, sometimes a small nodule or a thin
  dependent band at the lung bases.

Findings cover only some slices and vary in size and contrast, so the class is a property of
the whole volume: a classifier must gather evidence across slices (the DST's [CLS] token
can do so only through its attention blocks, hence the paper's Table V collapse at 0
blocks). Patients are numbered per class folder, as in the public data set, so patient IDs
repeat across classes; some patients have several scans, and depths vary.
Everything written is SYNTHETIC (phantoms, not patients). Same seed, same bytes.
"""

from __future__ import annotations

import io
import logging
import time
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

from cohort import __version__
from cohort.ccccii.layout import CLASSES
from cohort.errors import ConfigError
from cohort.storage import StorageOptions, filesystem, join, publish_marker, redact, write_bytes

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChestConfig:
    """What `cohort synth ccccii` generates."""

    patients: int = 60  # spread evenly over the three classes
    seed: int = 0
    matrix: int = 128  # pixels per side (the public data: 512; 128 keeps it light)
    min_slices: int = 32  # slices per scan drawn from [min_slices, max_slices]
    max_slices: int = 72
    extra_scan_p: float = 0.35  # chance of a second (and again of a third) scan per patient
    jpeg_p: float = 0.2  # share of scans written as JPEG instead of PNG
    noise: float = 0.03  # image noise (standard deviation, image range 0-1)

    def __post_init__(self) -> None:
        if self.patients < 3:
            raise ConfigError(f"--patients must be at least 3 (one per class), got {self.patients}")
        if not 32 <= self.matrix <= 1024:
            raise ConfigError(f"--matrix must be between 32 and 1024 pixels, got {self.matrix}")
        if not 2 <= self.min_slices <= self.max_slices <= 1024:
            raise ConfigError(
                f"slices per scan must satisfy 2 <= min <= max <= 1024, got "
                f"{self.min_slices}-{self.max_slices}"
            )
        for name in ("extra_scan_p", "jpeg_p"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"{name} must be a probability, got {getattr(self, name)}")


@dataclass(frozen=True)
class Finding:
    """One opacity: centre (x, y in [-1, 1], z in [0, 1]), radii, added intensity."""

    kind: str  # "ggo", "consolidation", "nodule", "band"
    centre: tuple[float, float, float]
    radii: tuple[float, float, float]
    gain: float


def _rng(cfg: ChestConfig, *parts: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([cfg.seed, *parts]))


def _ellipse(x, y, cx, cy, ax, ay):
    return ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2


def _window(matrix: int, cx: float, cy: float, radius: float) -> tuple[slice, slice]:
    """Rows and columns of the pixels within ``radius`` (image units) of (cx, cy): small
    structures are drawn there only, not over the whole image."""

    def span(c: float) -> slice:
        lo = int(np.floor((c - radius + 1) * matrix / 2))
        hi = int(np.ceil((c + radius + 1) * matrix / 2)) + 1
        return slice(max(lo, 0), max(min(hi, matrix), 0))

    return span(cy), span(cx)


def sample_findings(label: int, rng: np.random.Generator) -> list[Finding]:
    """The findings of one patient of class ``CLASSES[label]`` (plus distractors)."""
    found = []
    if CLASSES[label] == "NCP":
        n = int(rng.integers(2, 6))
        sides = [-1, 1] + list(rng.choice([-1, 1], n - 2))  # bilateral
        for side in sides:
            angle = rng.uniform(-2.4, 2.4)  # peripheral: near the lung's outer boundary
            r = rng.uniform(0.65, 0.9)
            cx = side * (0.38 + 0.28 * r * abs(np.cos(angle)))
            cy = -0.02 + 0.38 * r * np.sin(angle)
            found.append(
                Finding(
                    "ggo",
                    (cx, cy, rng.uniform(0.3, 0.9)),
                    (rng.uniform(0.08, 0.16), rng.uniform(0.08, 0.16), rng.uniform(0.06, 0.14)),
                    rng.uniform(0.15, 0.28),
                )
            )
    elif CLASSES[label] == "CP":
        side = rng.choice([-1, 1])
        found.append(
            Finding(
                "consolidation",
                (side * 0.4, rng.uniform(0.0, 0.2), rng.uniform(0.55, 0.8)),
                (rng.uniform(0.2, 0.3), rng.uniform(0.25, 0.4), rng.uniform(0.15, 0.3)),
                rng.uniform(0.3, 0.45),
            )
        )
    if rng.random() < 0.3:  # any class: a small nodule
        found.append(
            Finding(
                "nodule",
                (
                    rng.choice([-1, 1]) * rng.uniform(0.3, 0.5),
                    rng.uniform(-0.2, 0.2),
                    rng.uniform(0.2, 0.8),
                ),
                (0.03, 0.03, 0.03),
                0.45,
            )
        )
    if rng.random() < 0.3:  # any class: a thin dependent band at the bases
        found.append(
            Finding("band", (rng.choice([-1, 1]) * 0.38, 0.36, 0.9), (0.2, 0.03, 0.08), 0.25)
        )
    return found


def render_scan(
    matrix: int, depth: int, findings: list[Finding], rng: np.random.Generator, noise: float
) -> np.ndarray:
    """One chest CT, uint8 (depth, matrix, matrix), slice 0 at the apex."""
    c = (np.arange(matrix) + 0.5) / matrix * 2 - 1
    y, x = np.meshgrid(c, c, indexing="ij")  # (H, W): y down (anterior -> posterior)
    z = (np.arange(depth) + 0.5) / depth  # apex (0) -> base (1)
    body_a, body_b = rng.uniform(0.82, 0.9), rng.uniform(0.58, 0.66)
    out = np.empty((depth, matrix, matrix), dtype=np.uint8)
    # vessels: fixed points in the lungs that drift a little along z
    vessels = rng.uniform(-1, 1, (40, 2)) * (0.6, 0.45)
    drift = rng.normal(0, 0.1, (40, 2))
    rib_phase = rng.uniform(0, 2 * np.pi)
    for k, zk in enumerate(z):
        body = _ellipse(x, y, 0, 0.02, body_a, body_b)
        img = np.where(body < 1, 0.42, 0.0)  # soft tissue, air outside
        img = np.where((body < 1) & (body > 0.86), 0.34, img)  # subcutaneous fat
        grow = np.sin(np.pi * (0.12 + 0.8 * zk)) ** 0.5  # lung size: apex -> base
        lungs = np.zeros_like(x, dtype=bool)
        for side in (-1, 1):
            shrink = 0.6 if side == -1 and zk > 0.8 else 1.0  # liver dome (patient right)
            lung = _ellipse(x, y, side * 0.38, -0.02, 0.27 * grow, 0.4 * grow * shrink) < 1
            lungs |= lung
        img = np.where(lungs, 0.07, img)
        for (vx, vy), (dx, dy) in zip(vessels, drift, strict=True):
            px, py = vx + dx * zk, vy + dy * zk
            w = _window(matrix, px, py, 0.12)  # exp(-23) beyond: nothing to draw
            img[w] += 0.35 * lungs[w] * np.exp(-_ellipse(x[w], y[w], px, py, 0.025, 0.025))
        if zk < 0.35:  # trachea
            img = np.where(_ellipse(x, y, 0, -0.1, 0.06, 0.06) < 1, 0.02, img)
        else:  # heart and descending aorta
            img = np.where(
                _ellipse(x, y, 0.04, -0.05, 0.2 * (zk + 0.2), 0.2 * (zk + 0.2)) < 1, 0.52, img
            )
            img = np.where(_ellipse(x, y, 0.1, 0.3, 0.07, 0.07) < 1, 0.55, img)
        spine = _ellipse(x, y, 0, 0.5, 0.1, 0.09)
        img = np.where(spine < 1, np.where(spine > 0.6, 0.95, 0.75), img)
        for a in np.linspace(0, 2 * np.pi, 14, endpoint=False):  # ribs: oblique cuts
            angle = a + rib_phase + 0.12 * np.sin(2 * np.pi * 2 * zk + 3 * a)
            rx, ry = 0.92 * body_a * np.cos(angle), 0.02 + 0.9 * body_b * np.sin(angle)
            if ry > -0.35:  # no ribs over the sternum
                w = _window(matrix, rx, ry, 0.05)
                img[w] = np.where(_ellipse(x[w], y[w], rx, ry, 0.04, 0.025) < 1, 0.9, img[w])
        for f in findings:
            fx, fy, fz = f.centre
            ax, ay, az = f.radii
            dz = ((zk - fz) / az) ** 2
            if dz > 4:
                continue
            d = _ellipse(x, y, fx, fy, ax, ay) + dz
            if f.kind == "consolidation":  # dense, sharp fissure edge, air bronchograms
                blob = (d < 1) & (y > fy - ay * 0.3)
                bronchi = np.abs(np.sin(18 * (x - fx) + 6 * (y - fy))) < 0.12
                opacity = f.gain * blob * np.where(bronchi, 0.4, 1.0)
            elif f.kind == "ggo":  # faint, hazy edge
                opacity = f.gain * np.exp(-1.5 * d) * (1 + 0.3 * rng.standard_normal(x.shape))
            else:
                opacity = f.gain * np.exp(-2 * d)
            img += lungs * np.clip(opacity, 0, None)
        img += rng.normal(0, noise, img.shape)
        out[k] = np.clip(img * 255, 0, 255).astype(np.uint8)
    return out


def _encode(image: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


def generate_ccccii(
    cfg: ChestConfig, out_url: str, options: StorageOptions | None = None
) -> list[dict]:
    """Write the synthetic set (layout in the module docstring); one row per scan.

    Raises:
        ConfigError: ``out_url`` already holds files.
    """
    fs, root = filesystem(out_url, options)
    if fs.exists(root) and fs.find(root):
        raise ConfigError(f"{redact(out_url)} is not empty; give a new folder")
    t0 = time.perf_counter()
    labels = np.arange(cfg.patients) % len(CLASSES)
    _rng(cfg, 0).shuffle(labels)
    numbers = {c: 0 for c in range(len(CLASSES))}
    rows = []
    for p, label in enumerate(labels):
        label = int(label)
        numbers[label] += 1  # patient IDs count per class folder, as in the public data
        patient_id = str(numbers[label])
        rng = _rng(cfg, 1, p)
        findings = sample_findings(label, rng)
        n_scans = 1 + int(rng.random() < cfg.extra_scan_p)
        n_scans += int(n_scans == 2 and rng.random() < cfg.extra_scan_p)
        for s in range(n_scans):
            scan_id = str(1000 * (p + 1) + s)
            srng = _rng(cfg, 2, p, s)
            depth = int(srng.integers(cfg.min_slices, cfg.max_slices + 1))
            # a later scan: the same findings, grown or shrunk
            scale = 1.0 if s == 0 else float(srng.uniform(0.7, 1.2))
            these = [
                Finding(f.kind, f.centre, tuple(r * scale for r in f.radii), f.gain)
                for f in findings
            ]
            volume = render_scan(cfg.matrix, depth, these, srng, cfg.noise)
            fmt, ext = ("JPEG", "jpg") if srng.random() < cfg.jpeg_p else ("PNG", "png")
            folder = join(out_url, CLASSES[label], patient_id, scan_id)
            for k in range(depth):
                write_bytes(join(folder, f"{k}.{ext}"), _encode(volume[k], fmt), options)
            rows.append(
                {
                    "scan_key": f"{CLASSES[label]}/{patient_id}/{scan_id}",
                    "class_name": CLASSES[label],
                    "slices": depth,
                    "format": ext,
                    "findings": ";".join(f.kind for f in these),
                }
            )
    csv = "scan_key,class_name,slices,format,findings\n" + "".join(
        f"{r['scan_key']},{r['class_name']},{r['slices']},{r['format']},{r['findings']}\n"
        for r in rows
    )
    write_bytes(join(out_url, "ground_truth.csv"), csv.encode(), options)
    publish_marker(
        out_url,
        {
            "synthetic": True,
            "generator": "cohort synth ccccii",
            "version": __version__,
            "config": asdict(cfg),
            "scans": len(rows),
            "patients": cfg.patients,
        },
        options,
    )
    logger.info(
        "wrote %d synthetic scans of %d patients in %.1f s",
        len(rows),
        cfg.patients,
        time.perf_counter() - t0,
    )
    return rows


def describe(rows: list[dict], out_url: str, seconds: float) -> str:
    """A few lines for the console."""
    patients = {
        c: len({r["scan_key"].rsplit("/", 1)[0] for r in rows if r["class_name"] == c})
        for c in CLASSES
    }
    slices = [r["slices"] for r in rows]
    return (
        f"SYNTHETIC Clean-CC-CCII stand-in (phantoms, not patient data) written to "
        f"{out_url}\n  {sum(patients.values())} patients "
        f"({', '.join(f'{n} {c}' for c, n in patients.items())}), {len(rows)} scans, "
        f"{min(slices)}-{max(slices)} slices per scan, in {seconds:.1f} s"
    )
