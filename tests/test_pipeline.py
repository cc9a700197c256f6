"""The cohort job end to end: a synthetic cohort with bad series on a real S3 server
(SeaweedFS), a local Ray, Parquet read back with DuckDB."""

from __future__ import annotations

import io
import shutil
from dataclasses import replace
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pydicom
import pytest
import SimpleITK as sitk

from cohort.discover.manifest import read_manifest
from cohort.errors import ConfigError
from cohort.pipeline import RunConfig, finish_heavy, finish_resources, run_cohort
from cohort.query import connect
from cohort.testing import faults
from cohort.write.identity import IdentityConfig
from cohort.write.runs import published_runs, read_table, run_url

REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"


def _upload(fs, local: Path, url: str) -> None:
    fs.put(str(local), url.removeprefix("s3://"), recursive=True)


@pytest.fixture(scope="module")
def s3_cohort(varied_cohort, s3_server, tmp_path_factory):
    """The varied cohort on S3 with planted problems: one series' mask on the wrong grid,
    one series without a mask, one DICOM file truncated, one object that is not DICOM."""
    root, _ = varied_cohort
    truth = pd.read_parquet(root / "ground_truth.parquet")
    primaries = truth[truth["series_role"] == "primary"].sort_values("series_instance_uid")
    work = tmp_path_factory.mktemp("planted")
    masks = work / "masks"
    masks.mkdir()
    for p in (root / "masks").iterdir():
        masks.joinpath(p.name).write_bytes(p.read_bytes())
    wrong, missing = primaries["series_instance_uid"].iloc[:2]
    img = sitk.ReadImage(str(masks / f"{wrong}.nii.gz"))
    sitk.WriteImage(img[:, :, 1:], str(masks / f"{wrong}.nii.gz"))  # one slice short
    (masks / f"{missing}.nii.gz").unlink()
    # a blank scan (all air): it indexes and reads, but has no skull to split
    blank = primaries["series_instance_uid"].iloc[2]
    dicom = work / "dicom"
    shutil.copytree(root / "dicom", dicom)
    rel = primaries.set_index("series_instance_uid").loc[blank, "dicom_dir"]
    for f in sorted((dicom / Path(rel).relative_to("dicom")).iterdir()):
        ds = pydicom.dcmread(f)
        air = np.full_like(ds.pixel_array, int(round((-1000 - float(ds.RescaleIntercept))
                                                     / float(ds.RescaleSlope))))
        ds.PixelData = air.tobytes()
        ds.save_as(f)
    # a truncated slice in another series, and a stray object that is not DICOM
    truncated = primaries["series_instance_uid"].iloc[3]
    other = primaries.set_index("series_instance_uid").loc[truncated, "dicom_dir"]
    victim = sorted((dicom / Path(other).relative_to("dicom")).iterdir())[3]
    victim.write_bytes(victim.read_bytes()[:2000])
    (dicom / "notes.txt").write_bytes(b"not an image\n")
    # empty type-2 tags, as anonymised and real archives have them: a primary series with
    # no StudyDate or Manufacturer, and localizers (skipped) without a kernel
    undated = primaries["series_instance_uid"].iloc[4]
    rel = primaries.set_index("series_instance_uid").loc[undated, "dicom_dir"]
    for f in sorted((dicom / Path(rel).relative_to("dicom")).iterdir()):
        ds = pydicom.dcmread(f)
        ds.StudyDate, ds.Manufacturer = "", ""
        ds.save_as(f)
    for rel in truth[truth["series_role"] == "localizer"]["dicom_dir"]:
        for f in sorted((dicom / Path(rel).relative_to("dicom")).iterdir()):
            ds = pydicom.dcmread(f)
            if "ConvolutionKernel" in ds:
                del ds.ConvolutionKernel
                ds.save_as(f)
    bucket = s3_server.make_bucket("pipeline")
    fs = s3_server.filesystem()
    _upload(fs, dicom, f"{bucket}/archive")
    _upload(fs, masks, f"{bucket}/masks")
    return {"bucket": bucket, "archive": f"{bucket}/archive", "masks": f"{bucket}/masks",
            "wrong": wrong, "missing": missing, "blank": blank, "truncated": truncated,
            "undated": undated, "truth": truth, "root": root}


@pytest.fixture(scope="module")
def first_run(s3_cohort, s3_server, ray_local, tiny_checkpoint):
    out = f"{s3_cohort['bucket']}/out"
    config = RunConfig(model=str(tiny_checkpoint), masks=s3_cohort["masks"],
                       identity=IdentityConfig(salt="test-salt"), batch_size=3)
    report = run_cohort(s3_cohort["archive"], out, config, s3_server.storage_options())
    return out, config, report


def test_every_series_appears_once_with_its_status(first_run, s3_cohort, s3_server):
    out, _, report = first_run
    opts = s3_server.storage_options()
    manifest = read_manifest(f"{out}/index", opts).to_pandas()
    manifest = manifest[manifest["kind"] == "series"]
    series = read_table(out, "series", opts).to_pandas()
    assert sorted(series["series_key"]) == sorted(manifest["series_key"])  # once each
    status = dict(zip(series["series_key"], series["status"], strict=True))
    for m in manifest.itertuples():
        if m.status == "not_selected":
            assert status[m.series_key] == "skipped"
        elif m.status == "failed":
            assert status[m.series_key] == "error"
    codes = dict(zip(series["series_uid"], series["error_code"], strict=False))
    assert codes[s3_cohort["wrong"]] == "mask_mismatch"
    assert codes[s3_cohort["missing"]] == "mask_missing"
    assert codes[s3_cohort["blank"]] == "no_skull"
    ok = series[series["status"] == "ok"]
    assert len(ok) >= 4
    assert report.counts["ok"] == len(ok)
    # a mask problem keeps the landmarks of a good image: ok, no volumes, flagged
    bad_mask = ok["series_uid"].isin([s3_cohort["wrong"], s3_cohort["missing"]])
    assert bad_mask.sum() == 2 and not ok.loc[bad_mask, "volumes_computed"].any()
    assert all("mask_problem" in list(f) for f in ok.loc[bad_mask, "qc_flags"])
    assert ok.loc[~bad_mask, "volumes_computed"].all()
    # every ok series has its six landmarks (inside the volume) and eight segments
    for n in ("right_carotid_canal", "left_anterior_clinoid"):
        assert ok[f"{n}_slice"].between(0, ok["n_slices"] - 1).all()
        assert ok[f"{n}_prob"].between(0, 1).all()
    landmarks = read_table(out, "landmarks", opts).to_pandas()
    segments = read_table(out, "segments", opts).to_pandas()
    assert (landmarks.groupby("series_key").size() == 6).all()
    assert set(landmarks["series_key"]) == set(ok["series_key"])
    assert (segments.groupby("series_key").size() == 8).all()
    # the long tables agree with the wide one
    assert set(segments["series_key"]) == set(ok.loc[~bad_mask, "series_key"])
    wide = ok.set_index("series_key")
    for r in segments.itertuples():
        assert r.volume_mm3 == pytest.approx(wide.loc[r.series_key, f"{r.segment}_mm3"])


def test_a_repaired_stack_is_flagged_with_what_reading_did(first_run, s3_cohort, s3_server):
    out, _, _ = first_run
    series = read_table(out, "series", s3_server.storage_options()).to_pandas()
    repaired = series[series["series_uid"] == s3_cohort["truncated"]].iloc[0]
    assert repaired["status"] == "ok"  # the cut-short slice is interpolated from its neighbours
    assert "slices_repaired" in list(repaired["qc_flags"])
    assert "1 missing slice(s) interpolated" in repaired["error_detail"]
    assert str(repaired["qc_picture"]).endswith(".png")  # flagged: it gets a picture
    others = series[(series["status"] == "ok")
                    & (series["series_uid"] != s3_cohort["truncated"])]
    assert not any("slices_repaired" in list(f) for f in others["qc_flags"])


def test_empty_header_values_are_nulls_not_a_failed_job(first_run, s3_cohort, s3_server):
    out, _, report = first_run
    series = read_table(out, "series", s3_server.storage_options()).to_pandas()
    undated = series[series["series_uid"] == s3_cohort["undated"]].iloc[0]
    assert undated["status"] == "ok"
    assert pd.isna(undated["study_date"]) and pd.isna(undated["manufacturer"])  # nulls
    others = series[series["series_uid"] != s3_cohort["undated"]]
    assert others["study_date"].notna().all()
    truth = s3_cohort["truth"]
    localizers = series[series["series_uid"].isin(
        truth.loc[truth["series_role"] == "localizer", "series_instance_uid"])]
    assert len(localizers) and (localizers["status"] == "skipped").all()
    assert localizers["kernel"].isna().all()
    assert series.loc[series["status"] == "ok", "kernel"].notna().all()
    assert report.counts["skipped"] == (series["status"] == "skipped").sum()


def test_a_real_scanner_archive_publishes_a_row_per_series(tmp_path, ray_local,
                                                           tiny_checkpoint):
    """Philips CT with localizers, screenshots and a multi-frame object (no kernel): every
    series gets its row and the run is published."""
    archive = REALDATA / "dcm_qa_ct_philips"
    assert archive.is_dir(), f"real DICOM test files missing at {archive} (../shared/realdata)"
    out = tmp_path / "out"
    report = run_cohort(str(archive), str(out), RunConfig(
        model=str(tiny_checkpoint), qc="none", identity=IdentityConfig(keep_ids=True)))
    manifest = read_manifest(str(out / "index")).to_pandas()
    series = read_table(str(out), "series").to_pandas()
    assert published_runs(str(out)) == [report.run_id]
    assert sorted(series["series_key"]) == sorted(
        manifest.loc[manifest["kind"] == "series", "series_key"])
    assert report.counts["ok"] >= 1 and series["kernel"].isna().any()


def test_total_calcium_equals_the_masks(first_run, s3_cohort, s3_server):
    """Whatever the landmarks, the total volume is the mask's voxels times voxel volume."""
    out, _, _ = first_run
    series = read_table(out, "series", s3_server.storage_options()).to_pandas()
    truth = s3_cohort["truth"].set_index("series_instance_uid")
    ok = series[series["status"] == "ok"]
    ok = ok[~ok["tilt_corrected"].astype(bool)]  # tilted: truth lives on the corrected grid
    assert len(ok)
    for r in ok.itertuples():
        t = truth.loc[r.series_uid]
        assert r.total_calcium_voxels == sum(t[f"{s}_voxels"] for s in (
            "right_cervical", "right_petrous", "right_cavernous", "right_supraclinoid",
            "left_cervical", "left_petrous", "left_cavernous", "left_supraclinoid"))
        seg_sum = sum(getattr(r, f"{s}_mm3") for s in (
            "right_cervical", "right_petrous", "right_cavernous", "right_supraclinoid",
            "left_cervical", "left_petrous", "left_cavernous", "left_supraclinoid"))
        assert seg_sum == pytest.approx(r.total_calcium_mm3)


def test_no_names_birth_dates_or_raw_ids_in_outputs(first_run, s3_cohort, s3_server):
    out, _, _ = first_run
    opts = s3_server.storage_options()
    root: Path = s3_cohort["root"]
    some = next((root / "dicom").rglob("*.dcm"), None) or next(
        p for p in (root / "dicom").rglob("*") if p.is_file())
    ds = pydicom.dcmread(some, stop_before_pixels=True)
    name, birth, pid = str(ds.PatientName), str(ds.PatientBirthDate), str(ds.PatientID)
    assert name and birth and pid
    fs = s3_server.filesystem()
    for path in fs.find(out.removeprefix("s3://") + "/runs"):
        if path.endswith((".parquet", ".json")):
            blob = fs.cat_file(path)
            text = (pd.read_parquet(io.BytesIO(blob)).astype(str).to_csv()
                    if path.endswith(".parquet") else blob.decode())
            for secret in (name, birth, pid, "test-salt", s3_server.secret):
                assert secret not in text, (secret, path)
    series = read_table(out, "series", opts).to_pandas()
    assert series["patient_key"].str.fullmatch(r"[0-9a-f]{24}").all()


def test_duckdb_reads_the_tables_and_query_views(first_run, s3_server, tmp_path):
    out, _, _ = first_run
    opts = s3_server.storage_options()
    fs = s3_server.filesystem()
    local = tmp_path / "copy"
    fs.get(out.removeprefix("s3://") + "/runs", str(local), recursive=True)
    n = duckdb.sql(f"SELECT count(*) FROM read_parquet('{local}/*/series/*.parquet')"
                   ).fetchall()[0][0]
    con = connect(out, opts)
    assert con.sql("SELECT count(*) FROM series").fetchall()[0][0] == n
    by_group = con.sql("""SELECT s.risk_group, g.kind, sum(g.volume_mm3) FROM segments g
                          JOIN series s USING (series_key) GROUP BY ALL""").fetchall()
    assert by_group
    runs = con.sql("SELECT ok, model_trained_on FROM runs").fetchall()
    assert runs[0][1] == "synthetic phantoms"


def test_rerun_processes_nothing_and_retry_failed_keeps_one_row(first_run, s3_cohort,
                                                                s3_server):
    out, config, report = first_run
    opts = s3_server.storage_options()
    again = run_cohort(s3_cohort["archive"], out, config, opts)
    assert again.run_id is None and "nothing to do" in again.line()  # and nothing published
    assert len(published_runs(out, opts)) == 1
    retried = run_cohort(s3_cohort["archive"], out, replace(config, retry_failed=True), opts)
    assert retried.counts["ok"] == 2  # the two series whose masks were missing or wrong
    assert retried.counts["error"] == report.counts["error"]
    con = connect(out, opts)
    total, distinct = con.sql("SELECT count(*), count(DISTINCT series_key) FROM series"
                              ).fetchall()[0]
    assert total == distinct == sum(report.counts[k] for k in ("ok", "error", "skipped"))
    assert len(published_runs(out, opts)) == 2


def test_a_killed_worker_is_retried_without_loss_or_duplicate(first_run, s3_cohort, s3_server,
                                                              tiny_checkpoint, tmp_path):
    opts = s3_server.storage_options()
    index = f"{first_run[0]}/index"  # the first run's manifest: no second indexing
    out = f"{s3_cohort['bucket']}/out-killed"
    manifest = read_manifest(index, opts).to_pandas()
    selected = manifest[(manifest["kind"] == "series") & (manifest["status"] == "selected")]
    victim = selected["series_uid"].iloc[1]
    planted = {s3_cohort[k] for k in ("wrong", "missing", "blank", "truncated")}
    asked = next(u for u in selected["series_uid"].head(3) if u not in planted)
    marker = tmp_path / "killed-once"
    config = RunConfig(model=str(tiny_checkpoint), masks=s3_cohort["masks"], qc="none",
                       identity=IdentityConfig(salt="s"),
                       max_series=3, gpus=1,  # the actor asks for a GPU, as on a cluster
                       qc_series=(asked,))
    with faults.armed("prepare", str(marker), series=victim):
        report = run_cohort(index, out, config, opts)
    assert marker.exists()  # it did die
    series = read_table(out, "series", opts).to_pandas()
    assert series["series_key"].is_unique
    row = series[series["series_uid"] == victim]
    assert len(row) == 1 and row["status"].iloc[0] == "ok"
    assert report.counts["ok"] == (series["status"] == "ok").sum()
    pictures = series.dropna(subset=["qc_picture"])  # qc="none", but one was asked for
    assert list(pictures["series_uid"]) == [asked]
    png = s3_server.filesystem().cat_file(
        f"{report.url.removeprefix('s3://')}/{pictures['qc_picture'].iloc[0]}")
    assert png.startswith(b"\x89PNG")


def test_an_unfinished_run_is_invisible(tmp_path, ray_local, tiny_checkpoint,
                                                   varied_cohort):
    root, _ = varied_cohort
    out = tmp_path / "out"
    config = RunConfig(model=str(tiny_checkpoint), qc="none", max_series=2, segment=False,
                       identity=IdentityConfig(keep_ids=True))
    first = run_cohort(str(root / "dicom"), str(out), config)
    # a run killed after writing a part: no marker
    stale = Path(run_url(str(out), "20000101T000000Z-dead00"))
    (stale / "series").mkdir(parents=True)
    (stale / "series" / "part-00000.parquet").write_bytes(
        (Path(first.url) / "series" / "part-00000.parquet").read_bytes())
    assert published_runs(str(out)) == [first.run_id]
    n = connect(str(out)).sql("SELECT count(*) FROM series").fetchall()[0][0]
    assert n == sum(first.counts[k] for k in ("ok", "error", "skipped"))
    # without a mask and with the segmenter off the volumes are not computed, and the table
    # says so
    series = read_table(str(out), "series").to_pandas()
    ok = series[series["status"] == "ok"]
    assert len(ok) == 2 and not ok["volumes_computed"].any()
    assert ok["total_calcium_mm3"].isna().all()
    assert ok["error_detail"].str.contains("not computed").all()
    # keep_ids: identifiers as they are
    truth = pd.read_parquet(root / "ground_truth.parquet")
    assert set(series["patient_key"].dropna()) <= set(truth["patient_id"])


def test_bad_options_fail_before_any_work(tmp_path, tiny_checkpoint, varied_cohort,
                                          monkeypatch):
    root, _ = varied_cohort
    monkeypatch.delenv("COHORT_SALT", raising=False)
    with pytest.raises(ConfigError, match="salt"):
        run_cohort(str(root / "dicom"), str(tmp_path / "o1"), RunConfig())
    ok_id = IdentityConfig(salt="x")
    with pytest.raises(ConfigError, match="does not exist"):
        run_cohort(str(root / "dicom"), str(tmp_path / "o2"),
                   RunConfig(model=str(tmp_path / "nope.pt"), identity=ok_id))
    with pytest.raises(ConfigError, match="not a folder"):
        run_cohort(str(root / "dicom"), str(tmp_path / "o3"),
                   RunConfig(model=str(tiny_checkpoint), masks=str(tmp_path / "none"),
                             identity=ok_id))
    with pytest.raises(ConfigError, match="--qc"):
        RunConfig(qc="some")
    with pytest.raises(ConfigError, match="--masks"):
        RunConfig(label_maps=True)
    assert not (tmp_path / "o1" / "runs").exists()
    with pytest.raises(ConfigError, match="--task-cpus must be positive, got 0"):
        RunConfig(task_cpus=0)
    with pytest.raises(ConfigError, match="--finish-tasks must be positive, got 0"):
        RunConfig(finish_tasks=0)
    with pytest.raises(ConfigError, match="--timeout must be positive, got 0.*--batch-size"
                       "|--batch-size must be positive, got 0.*--timeout"):
        RunConfig(series_timeout_s=0, batch_size=0)
    with pytest.raises(ConfigError, match="--actor-cpus must be 0 or more"):
        RunConfig(actor_cpus=-1)


def test_a_light_finish_stage_reserves_no_cpu_a_heavy_one_does():
    """A 1-CPU finish stage would hold back the 1-CPU prepare tasks on a small node (Ray Data
    splits the CPUs between the stages that reserve them); it only reserves when it reads
    full-resolution data for most series."""
    import ray.data

    light = finish_resources(RunConfig(finish_tasks=3))
    assert light["num_cpus"] == 0
    assert light["compute"] == ray.data.TaskPoolStrategy(size=3)
    for heavy_config in (RunConfig(qc="all"), RunConfig(masks="m", label_maps=True)):
        assert finish_heavy(heavy_config)
        heavy = finish_resources(replace(heavy_config, task_cpus=0.5, task_memory_gb=2.0))
        assert heavy == {"num_cpus": 0.5, "memory": 2.0 * 1024**3}
    assert not finish_heavy(RunConfig(qc="flagged", qc_series=("1.2.3",)))
    assert finish_resources(RunConfig(finish_tasks=3), max_tasks=1)["compute"].size == 1


def test_impossible_requests_stop_before_anything_is_written(tmp_path, ray_local,
                                                             tiny_checkpoint, varied_cohort):
    """Ray would wait forever for a GPU it lacks; misnamed masks would cost a whole run of
    mask_missing rows; an output inside the input would be indexed as input."""
    from cohort.config import DiscoveryConfig, IndexConfig
    from cohort.discover.index import index_cohort

    root, _ = varied_cohort
    ident = IdentityConfig(salt="x")
    with pytest.raises(ConfigError, match="inside the input"):
        run_cohort(str(root / "dicom"), str(root / "dicom" / "results"),
                   RunConfig(model=str(tiny_checkpoint), identity=ident))
    index = tmp_path / "index"
    index_cohort(str(root / "dicom"), str(index),
                 IndexConfig(discovery=DiscoveryConfig(executor="local")))
    base = RunConfig(model=f"file://{tiny_checkpoint}", identity=ident)
    with pytest.raises(ConfigError, match="--gpus 2"):  # the session's Ray declares one GPU
        run_cohort(str(index), str(tmp_path / "o1"), replace(base, gpus=2))
    with pytest.raises(ConfigError, match="--task-memory"):
        run_cohort(str(index), str(tmp_path / "o2"), replace(base, task_memory_gb=10_000))
    misnamed = tmp_path / "masks"
    misnamed.mkdir()
    (misnamed / "PAT-0001.nii.gz").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"<SeriesInstanceUID>\.nii\.gz.*PAT-0001"):
        run_cohort(str(index), str(tmp_path / "o3"), replace(base, masks=str(misnamed)))
    for o in ("o1", "o2", "o3"):
        assert published_runs(str(tmp_path / o)) == []
        assert not (tmp_path / o / "runs").exists()
