"""`cohort synth heads`: a synthetic head-CT cohort written as a PACS export would be.

Layout under the output URL:

    dicom/<PatientID>/<StudyDate>_<Accession>/<SeriesNumber>/IM<nnnn>.dcm
    masks/<SeriesInstanceUID>.nii.gz      binary calcium mask (the "external mask")
    labels/<SeriesInstanceUID>.nii.gz     segment label map (codes: cohort.anatomy)
    ground_truth.parquet                  one row per series (schema: cohort.schemas)
    _SUCCESS.json                         written last: the cohort is complete

Every patient is a pure function of (seed, patient index): the same command writes the
same bytes, whatever the number of worker processes.
"""

from __future__ import annotations

import io
import logging
import multiprocessing
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import SimpleITK as sitk
from pydicom.uid import generate_uid

from cohort import __version__
from cohort.anatomy import LANDMARKS, SEGMENTS
from cohort.errors import ConfigError
from cohort.geometry import Grid, native_slice_of
from cohort.ray_session import RaySession
from cohort.schemas import GROUND_TRUTH
from cohort.storage import (
    StorageOptions,
    filesystem,
    is_published,
    join,
    publish_marker,
    redact,
    write_bytes,
)
from cohort.synth.acquisition import Protocol, bone_variant, sample_protocol, thick_variant
from cohort.synth.config import SynthConfig
from cohort.synth.dicom_writer import SeriesIdentity, encode_localizer, encode_series
from cohort.synth.phantom import Phantom, build_phantom
from cohort.synth.render import Placement
from cohort.synth.scan import (
    Coverage,
    ScanArtefacts,
    ScanTruth,
    acquisition_grid,
    finish_image,
    native_centres,
    placement_of,
    render_scan,
    sample_artefacts,
    sample_coverage,
    scan_truth,
    stepped_grids,
    stepped_regular_grid,
    stepped_truth_grid,
    subsamples,
)
from cohort.synth.subject import Pose, Subject, sample_plaque, sample_pose, sample_subject

logger = logging.getLogger(__name__)

FIRST_NAMES = ("JANE", "JOHN", "MARIA", "AHMED", "WEI", "OLGA", "KWAME", "INGRID", "RAVI",
               "LUCIA", "HIROSHI", "FATIMA", "PIERRE", "AMARA", "SVEN", "MEI")
LAST_NAMES = ("DOE", "SMITH", "GARCIA", "MUELLER", "NGUYEN", "KOWALSKI", "OKAFOR", "TANAKA",
              "ROSSI", "HANSEN", "SILVA", "COHEN", "PATEL", "IVANOVA", "MARTIN", "BROWN")


def _rng(cfg: SynthConfig, index: int, purpose: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([cfg.seed, index, purpose]))


def _uid(cfg: SynthConfig, *parts) -> str:
    return generate_uid(entropy_srcs=["cohort-synth", str(cfg.seed), *map(str, parts)])


def _grown(subject: Subject, rng: np.random.Generator) -> Subject:
    """The same subject some years later: plaques grow, sometimes a new one appears."""
    plaques = [replace(p, volume_mm3=min(250.0, p.volume_mm3 * float(rng.uniform(1.05, 1.6))))
               for p in subject.plaques]
    if rng.random() < 0.4:
        template = subject.plaques[0] if subject.plaques else None
        plaques.append(sample_plaque(
            rng, "left" if rng.random() < 0.5 else "right",
            str(rng.choice(["cavernous", "supraclinoid"])), float(rng.uniform(1.0, 20.0)),
            hu=template.hu if template else None))
    return replace(subject, plaques=tuple(plaques))


def generate_patient(cfg: SynthConfig, index: int, out_url: str,
                     options: StorageOptions | None) -> list[dict]:
    """Write every series of one patient; return their ground-truth rows."""
    rng = _rng(cfg, index, 0)
    subject = sample_subject(rng, index, cfg.calcium_free_p, cfg.metal_p)
    ident_rng = _rng(cfg, index, 1)
    patient_id = f"SYN{cfg.seed % 1000:03d}{index:05d}"
    name = f"{ident_rng.choice(LAST_NAMES)}^{ident_rng.choice(FIRST_NAMES)}"
    sex = "F" if ident_rng.random() < 0.5 else "M"
    birth_year = int(ident_rng.integers(1935, 1980))
    birth = f"{birth_year}{int(ident_rng.integers(1, 13)):02d}{int(ident_rng.integers(1, 29)):02d}"
    study_year = int(ident_rng.integers(2012, 2022))
    studies = [("baseline", study_year, subject)]
    if rng.random() < cfg.followup_p:
        studies.append(("followup", study_year + int(rng.integers(1, 4)), _grown(subject, rng)))
    rows: list[dict] = []
    for s_no, (role, year, subj) in enumerate(studies, start=1):
        srng = _rng(cfg, index, 10 + s_no)
        phantom = build_phantom(subj, texture_seed=int(_rng(cfg, index, 2).integers(2**31)))
        pose = sample_pose(srng)
        placement = placement_of(pose, table_z=float(srng.uniform(-180.0, 40.0)))
        coverage = sample_coverage(srng, phantom, cfg.neck_cut_p)
        protocol = sample_protocol(srng, matrix=cfg.matrix, thickness_choices=cfg.thicknesses_mm,
                                   spacing_range=cfg.pixel_spacing_mm, tilt_p=cfg.tilt_p,
                                   transfer_syntax=cfg.transfer_syntax,
                                   stepped_p=cfg.stepped_p)
        date = f"{year}{int(srng.integers(1, 13)):02d}{int(srng.integers(1, 29)):02d}"
        study = dict(
            patient_name=name, patient_id=patient_id, birth_date=birth, sex=sex,
            age_years=year - birth_year, study_uid=_uid(cfg, index, s_no, "study"),
            study_date=date,
            study_time=f"{int(srng.integers(7, 20)):02d}{int(srng.integers(60)):02d}00",
            accession=f"A{cfg.seed % 100:02d}{index:06d}{s_no}",
            study_description="CT HEAD WO CONTRAST (SYNTHETIC)",
            frame_of_reference_uid=_uid(cfg, index, s_no, "for"),
        )
        artefacts = sample_artefacts(srng, protocol, holder_p=cfg.holder_p,
                                     motion_p=cfg.motion_p)
        ctx = _StudyContext(cfg, index, s_no, role, out_url, options, study, phantom, placement,
                            pose, coverage, srng, artefacts)
        rows += ctx.write_all(protocol)
    return rows


@dataclass
class _StudyContext:
    cfg: SynthConfig
    index: int
    study_no: int
    role: str
    out_url: str
    options: StorageOptions | None
    study: dict
    phantom: Phantom
    placement: Placement
    pose: Pose
    coverage: Coverage
    rng: np.random.Generator
    artefacts: ScanArtefacts

    def identity(self, series_number: int, description: str, image_type=None) -> SeriesIdentity:
        kw = dict(self.study)
        kw.update(series_uid=_uid(self.cfg, self.index, self.study_no, series_number, "series"),
                  series_number=series_number, series_description=description)
        if image_type:
            kw["image_type"] = image_type
        return SeriesIdentity(**kw)

    def dicom_dir(self, series_number: int) -> str:
        s = self.study
        return f"dicom/{s['patient_id']}/{s['study_date']}_{s['accession']}/{series_number:03d}"

    def write_all(self, p: Protocol) -> list[dict]:
        if p.stepped:
            return self.write_stepped(p)
        cfg = self.cfg
        grid = acquisition_grid(self.phantom, self.placement, self.coverage, p)
        clean, occ = render_scan(self.phantom, self.placement, grid, p, cfg.render_scale,
                                 self.artefacts)
        truth_grid = grid.axial_equivalent()
        n_sub = subsamples(p.slice_thickness_mm)
        truth = scan_truth(self.phantom, self.placement, truth_grid, n_sub,
                           occ if truth_grid is grid else None, acquired=grid)
        rows = []
        wants_localizer = self.rng.random() < cfg.localizer_p
        wants_second = self.rng.random() < cfg.second_series_p
        if wants_localizer:
            rows.append(self.write_localizer(clean, grid, p))
        image = finish_image(clean, p, self.rng)
        rows.append(self.write_series(2, "primary", [(image, grid, p)], truth))
        if wants_second:
            if p.slice_thickness_mm < 3.0:
                m = max(2, int(round(5.0 / p.slice_thickness_mm)))
                nk = (grid.shape[0] // m) * m
                thick_clean = clean[:nk].reshape(-1, m, *clean.shape[1:]).mean(axis=1)
                step = np.asarray(grid.slice_step)
                tgrid = Grid(tuple(np.asarray(grid.origin) + step * (m - 1) / 2), grid.col_step,
                             grid.row_step, tuple(step * m), (nk // m, *grid.shape[1:]))
                pt = thick_variant(p, p.slice_thickness_mm * m)
                ttruth = scan_truth(self.phantom, self.placement, tgrid.axial_equivalent(),
                                    subsamples(pt.slice_thickness_mm), acquired=tgrid)
                rows.append(self.write_series(
                    3, "thick", [(finish_image(thick_clean, pt, self.rng), tgrid, pt)], ttruth))
            else:
                pb = bone_variant(p, self.rng)
                rows.append(self.write_series(
                    3, "bone_kernel", [(finish_image(clean, pb, self.rng), grid, pb)], truth))
        return rows

    def write_stepped(self, p: Protocol) -> list[dict]:
        """A sequential head protocol: two contiguous blocks of different thickness in one
        series; the ground truth lives on the grid the reader puts it on (the lower
        block's spacing, `stepped_truth_grid`)."""
        cfg = self.cfg
        grids = stepped_grids(self.phantom, self.placement, self.coverage, p)
        protocols = [p, thick_variant(p, p.upper_thickness_mm)]
        cleans = [render_scan(self.phantom, self.placement, g, q, cfg.render_scale,
                              self.artefacts)[0]
                  for g, q in zip(grids, protocols, strict=True)]
        # a tilted stepped stack images only what its sheared slices reach, as a regular one
        truth = scan_truth(self.phantom, self.placement, stepped_truth_grid(grids),
                           subsamples(p.slice_thickness_mm),
                           acquired=stepped_regular_grid(grids))
        rows = []
        wants_localizer = self.rng.random() < cfg.localizer_p
        wants_second = self.rng.random() < cfg.second_series_p
        if wants_localizer:
            rows.append(self.write_localizer(cleans[1], grids[1], p))
        blocks = [(finish_image(c, q, self.rng), g, q)
                  for c, g, q in zip(cleans, grids, protocols, strict=True)]
        rows.append(self.write_series(2, "primary", blocks, truth))
        if wants_second:
            pb = bone_variant(p, self.rng)
            bones = [pb, replace(thick_variant(pb, p.upper_thickness_mm),
                                 noise_sd_hu=protocols[1].noise_sd_hu * 4.0)]
            blocks = [(finish_image(c, q, self.rng), g, q)
                      for c, g, q in zip(cleans, grids, bones, strict=True)]
            rows.append(self.write_series(3, "bone_kernel", blocks, truth))
        return rows

    def write_series(self, number: int, series_role: str,
                     blocks: list[tuple[np.ndarray, Grid, Protocol]], truth: ScanTruth) -> dict:
        """One series of one or more contiguous blocks (hu, grid, protocol), feet to head."""
        _, grid, p = blocks[0]
        n_total = sum(g.shape[0] for _, g, _ in blocks)
        desc = {"primary": "HEAD 5mm STND" if p.slice_thickness_mm >= 5 else "HEAD AXIAL",
                "thick": f"HEAD {p.slice_thickness_mm:g}mm THICK",
                "bone_kernel": "HEAD BONE"}[series_role]
        if len(blocks) > 1:
            desc = f"HEAD SEQ {'/'.join(f'{q.slice_thickness_mm:g}' for _, _, q in blocks)}mm" \
                + (" BONE" if p.bone_kernel else "")
        ident = self.identity(number, desc)
        sops = [_uid(self.cfg, self.index, self.study_no, number, k) for k in range(n_total)]
        folder = self.dicom_dir(number)
        k0 = 0
        for hu, g, q in blocks:
            nk = g.shape[0]
            files = encode_series(hu, g, q, ident, sops[k0:k0 + nk],
                                  instances=[n_total - k for k in range(k0, k0 + nk)])
            for k, data in enumerate(files, start=k0):
                write_bytes(join(self.out_url, folder, f"IM{n_total - k:04d}.dcm"), data,
                            self.options)
            k0 += nk
        mask_rel = f"masks/{ident.series_uid}.nii.gz"
        labels_rel = f"labels/{ident.series_uid}.nii.gz"
        write_bytes(join(self.out_url, mask_rel), nifti_bytes(truth.mask, truth.grid), self.options)
        write_bytes(join(self.out_url, labels_rel), nifti_bytes(truth.labels, truth.grid),
                    self.options)
        row = self.base_row(ident, series_role, folder, grid, p)
        row.update(mask_path=mask_rel, labels_path=labels_rel,
                   first_slice_z_mm=float(truth.grid.origin[2]),
                   n_plaques=truth.plaques_in_scan,
                   total_calcium_mm3=float(sum(truth.segment_volumes_mm3.values())),
                   n_slices=n_total, truth_grid_slices=truth.grid.shape[0],
                   slice_step_mm=float(truth.grid.spacing[2]),
                   variable_spacing=len(blocks) > 1,
                   upper_slice_thickness_mm=(blocks[-1][2].slice_thickness_mm
                                             if len(blocks) > 1 else None))
        native = None
        if len(blocks) > 1:  # landmark slices count acquired slices, not truth-grid ones
            native = native_centres([g for _, g, _ in blocks],
                                    [q.slice_thickness_mm for _, _, q in blocks], p.tilt_deg)
        for name in LANDMARKS:
            row[f"{name}_slice"] = (truth.landmark_slices[name] if native is None else
                                    int(native_slice_of(truth.landmark_z_mm[name], *native)))
            row[f"{name}_z_mm"] = truth.landmark_z_mm[name]
        for name in SEGMENTS:
            row[f"{name}_mm3"] = truth.segment_volumes_mm3[name]
            row[f"{name}_voxels"] = truth.segment_voxels[name]
        return row

    def write_localizer(self, clean: np.ndarray, grid: Grid, p: Protocol) -> dict:
        """A lateral scout: the volume projected along left-right, top of the head up."""
        proj = clean.mean(axis=2)[::-1]  # (z from the top, y)
        ident = self.identity(1, "TOPOGRAM LAT", ("ORIGINAL", "PRIMARY", "LOCALIZER"))
        top = np.asarray(grid.slice_positions()[-1])
        origin = (0.0, top[1], top[2])
        dz, px = grid.spacing[2], grid.spacing[1]
        data = encode_localizer(proj, origin, (0.0, 1.0, 0.0), (0.0, 0.0, -1.0), (dz, px), p,
                                ident, _uid(self.cfg, self.index, self.study_no, 1, 0))
        folder = self.dicom_dir(1)
        write_bytes(join(self.out_url, folder, "IM0001.dcm"), data, self.options)
        row = self.base_row(ident, "localizer", folder, grid, p)
        row.update(n_slices=1, rows=proj.shape[0], columns=proj.shape[1],
                   first_slice_z_mm=float(top[2]))
        return row

    def base_row(self, ident: SeriesIdentity, series_role: str, folder: str, grid: Grid,
                 p: Protocol) -> dict:
        row = {f.name: None for f in GROUND_TRUTH}
        row.update(
            synthetic=True, patient_id=ident.patient_id, patient_index=self.index,
            study_instance_uid=ident.study_uid, study_role=self.role,
            series_instance_uid=ident.series_uid, series_number=ident.series_number,
            series_role=series_role, dicom_dir=folder, n_slices=grid.shape[0],
            rows=grid.shape[1], columns=grid.shape[2], pixel_spacing_mm=p.pixel_spacing_mm,
            slice_thickness_mm=p.slice_thickness_mm, slice_step_mm=float(grid.spacing[2]),
            gantry_tilt_deg=p.tilt_deg, manufacturer=p.manufacturer, model=p.model,
            kernel=p.kernel, transfer_syntax=p.transfer_syntax, noise_sd_hu=p.noise_sd_hu,
            neck_cut=self.coverage.neck_cut, yaw_deg=self.pose.yaw_deg,
            pitch_deg=self.pose.pitch_deg, roll_deg=self.pose.roll_deg,
            artefacts=",".join(self.artefacts.names()
                               + (["metal"] if self.phantom.subject.dental_fillings else [])),
            distractors=",".join(self.phantom.distractors),
        )
        return row


def nifti_bytes(array: np.ndarray, grid: Grid) -> bytes:
    """A [k, j, i] uint8 array on an axial ``grid`` as gzipped NIfTI bytes."""
    img = sitk.GetImageFromArray(array)
    img.SetOrigin(tuple(float(v) for v in grid.origin))
    img.SetSpacing(grid.spacing)
    m = grid.matrix / np.asarray(grid.spacing)
    img.SetDirection(tuple(float(v) for v in m.ravel()))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "x.nii.gz")
        sitk.WriteImage(img, path, useCompression=True)
        with open(path, "rb") as f:
            return f.read()


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)


def _generate_one(args) -> list[dict]:
    cfg, index, out_url, options = args
    return generate_patient(cfg, index, out_url, options)


def _run_local(jobs: list, workers: int) -> list[dict]:
    rows: list[dict] = []
    if workers <= 1:
        for job in jobs:
            rows += _generate_one(job)
            logger.info("patient %d/%d done", job[1] + 1, len(jobs))
        return rows
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init) as pool:
        for n, patient_rows in enumerate(pool.map(_generate_one, jobs), start=1):
            rows += patient_rows
            logger.info("patient %d/%d done", n, len(jobs))
    return rows


def _run_ray(jobs: list) -> list[dict]:
    """One Ray task per patient, on the Ray this process is connected to (the cluster of a
    ``ray job submit``), else on a local one started and shut down here."""
    import ray

    with RaySession() as session:
        session.ensure()
        return _run_ray_tasks(ray, jobs)


def _run_ray_tasks(ray, jobs: list) -> list[dict]:

    @ray.remote(num_cpus=1, memory=4 * 1024**3, max_retries=2)
    def patient(job):
        _worker_init()
        return _generate_one(job)

    refs = [patient.remote(job) for job in jobs]
    pending, done = list(refs), 0
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        done += len(ready)
        logger.info("patient %d/%d done", done, len(jobs))
    rows: list[dict] = []
    for r in ray.get(refs):  # in patient order, so the table does not depend on scheduling
        rows += r
    return rows


def generate_cohort(cfg: SynthConfig, out_url: str, options: StorageOptions | None = None, *,
                    overwrite: bool = False, executor: str = "processes") -> pa.Table:
    """Write a whole synthetic cohort under ``out_url``; return the ground-truth table.

    ``executor`` is ``"processes"`` (a local process pool of ``cfg.workers``) or ``"ray"``
    (one Ray task per patient on the connected cluster, e.g. inside ``ray job submit``).
    """
    if executor not in ("processes", "ray"):
        raise ConfigError(f"unknown executor {executor!r}; use processes or ray")
    fs, root = filesystem(out_url, options)
    if _holds_files(fs, root):
        if not overwrite:
            raise ConfigError(f"{out_url} is not empty; give a new folder, or pass --overwrite "
                              "to replace a cohort written there before")
        if not (fs.exists(join(root, "ground_truth.parquet")) or fs.exists(join(root, "dicom"))
                or fs.exists(join(root, "_SUCCESS.json"))):
            raise ConfigError(f"{out_url} holds files that are not a synthetic cohort; "
                              "refusing to overwrite them, give a new folder")
        if fs.exists(join(root, "_SUCCESS.json")):
            fs.rm(join(root, "_SUCCESS.json"))  # first, so it never looks complete meanwhile
        fs.rm(root, recursive=True)
    t0 = time.perf_counter()
    jobs = [(cfg, i, out_url, options) for i in range(cfg.patients)]
    logger.info("generating %d synthetic patients into %s (%s)", cfg.patients,
                redact(out_url), executor)
    rows = _run_ray(jobs) if executor == "ray" else _run_local(jobs, cfg.effective_workers)
    table = pa.Table.from_pylist(rows, schema=GROUND_TRUTH)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    write_bytes(join(out_url, "ground_truth.parquet"), buf.getvalue(), options)
    seconds = time.perf_counter() - t0
    publish_marker(out_url, {
        "what": "synthetic head-CT cohort (phantoms, not patient data)",
        "synthetic": True, "cohort_version": __version__, "config": _jsonable(asdict(cfg)),
        "patients": cfg.patients, "series": table.num_rows, "seconds": round(seconds, 2),
    }, options)
    return table


def _holds_files(fs, root: str) -> bool:
    """True when any file lies under ``root`` (an emptied S3 prefix may still be listed)."""
    fs.invalidate_cache()
    if not fs.exists(root):
        return False
    return any(p.rstrip("/") != root.rstrip("/") for p in fs.find(root))


def is_complete(out_url: str, options: StorageOptions | None = None) -> bool:
    """True when a cohort under ``out_url`` was written to the end."""
    return is_published(out_url, options)


def _jsonable(d: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}
