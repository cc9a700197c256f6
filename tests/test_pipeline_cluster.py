"""The cohort job on a simulated multi-node Ray cluster (`ray.cluster_utils.Cluster`): a head
without CPUs (it only drives the job, as in cluster.yaml and rayjob.yaml), two CPU nodes, and
a node that advertises one GPU (torch falls back to the CPU there). The archive is spread
over two folders (one series with slices in both), and the job's driver is killed midway:

    1. a child process holds the cluster (as the cluster's nodes outlive a driver);
    2. a first driver process runs the job on both folders, one series stalled by a fault
       drill, and is killed (SIGKILL) once a finished series is written;
    3. a second driver process on the same cluster runs the same command: it takes over the
       output, publishes what the first one finished, and does the rest.

Ray can be initialised only once per process and the session's `ray_local` fixture may hold
it, so the cluster and each driver run in a child process: this file, run as a script. The
drivers print one JSON line; the test reads the published tables and checks them.

    python tests/test_pipeline_cluster.py cluster ADDRESS_FILE              # holds it
    python tests/test_pipeline_cluster.py drive ADDRESS OUT MODEL MASKS INPUT...
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

# the cluster, two driver processes and two indexings: minutes on a small machine
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

SALT = "cluster-test-salt"
NODES = {"cpu-a": {"num_cpus": 2}, "cpu-b": {"num_cpus": 1}, "gpu": {"num_cpus": 1, "num_gpus": 1}}
STORE = 100 * 1024**2  # object store per node: small, the job keeps what travels small
RESULT = "CLUSTER-RESULT "  # prefix of a driver's JSON line
KILL_WITHIN_S = 480  # the first driver must have written a finished series by then


def nodes_used(stats: str) -> dict[str, int]:
    """Operator name -> nodes its tasks ran on, from Ray Data's stats text
    ("Operator 1 Map(prepare_stage): ..." then "* Tasks per node: ...; 2 nodes used")."""
    used: dict[str, int] = {}
    name = None
    for line in stats.splitlines():
        op = re.match(r"\s*Operator \d+ (.+?):", line)
        if op:
            name = op.group(1)
        found = re.search(r"(\d+) nodes used", line)
        if found and name is not None:
            used[name] = max(used.get(name, 0), int(found.group(1)))
    return used


def hold_cluster(address_file: str) -> None:
    """Start the cluster, write its address to ``address_file``, keep it until stdin closes."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "object_store_memory": STORE, "include_dashboard": False},
    )
    try:
        for resources in NODES.values():
            cluster.add_node(object_store_memory=STORE, **resources)
        cluster.wait_for_nodes(timeout=120)
        Path(address_file + ".tmp").write_text(cluster.address)
        os.replace(address_file + ".tmp", address_file)
        sys.stdin.read()  # until the test closes it (or dies)
    finally:
        cluster.shutdown()


def drive(address: str, out: str, model: str, masks: str, *inputs: str) -> dict:
    """Connect to the cluster and run the job with one GPU actor; what happened."""
    import ray

    from cohort.pipeline import RunConfig, run_cohort
    from cohort.write.identity import IdentityConfig

    ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    ray.data.DataContext.get_current().enable_progress_bars = False
    nodes = [n for n in ray.nodes() if n["Alive"]]
    # a part per series: what the driver finished is written as it comes
    config = RunConfig(model=model, masks=masks, gpus=1, batch_size=2, part_rows=1,
                       identity=IdentityConfig(salt=SALT))
    report = run_cohort(inputs, out, config)
    return {
        "counts": report.counts,
        "run_id": report.run_id,
        "nodes": [n["Resources"] for n in nodes],
        "nodes_used": nodes_used(report.manifest["ray_data_stats"]),
        "seconds_job": round(report.seconds, 1),
    }


def _ok_written(out: Path) -> int:
    """Finished (ok) series in the committed series parts under ``out``."""
    import pyarrow.parquet as pq

    n = 0
    for part in out.glob("runs/*/series/part-*.parquet"):
        n += pq.read_table(part, columns=["status"]).column(0).to_pylist().count("ok")
    return n


def _wait_for_address(path: Path, cluster: subprocess.Popen, log: Path) -> str:
    deadline = time.time() + 300
    while not path.exists():
        assert cluster.poll() is None, f"the cluster did not start:\n{log.read_text()[-4000:]}"
        assert time.time() < deadline, f"no cluster after 300 s:\n{log.read_text()[-4000:]}"
        time.sleep(0.5)
    return path.read_text().strip()


@pytest.fixture(scope="module")
def cluster_run(tmp_path_factory, tiny_checkpoint):
    """A small cohort (localizers and second series to skip, one mask missing) spread over
    two folders; the job on the simulated cluster, its first driver killed midway and a
    second one resuming."""
    import pandas as pd

    from cohort.synth.config import SynthConfig
    from cohort.synth.heads import generate_cohort
    from cohort.testing import faults
    from cohort.testing.archives import split_archive

    work = tmp_path_factory.mktemp("cluster")
    root = work / "cohort"
    # slices of 1.25 mm and thicker: the tiny DST takes at most 256 slices
    cfg = SynthConfig(
        patients=8,
        seed=23,
        matrix=64,
        thicknesses_mm=(1.25, 2.5, 5.0),
        localizer_p=0.5,
        second_series_p=0.5,
        followup_p=0.0,
        tilt_p=0.0,
        workers=1,
    )
    truth = generate_cohort(cfg, str(root)).to_pandas()
    primaries = sorted(truth.loc[truth["series_role"] == "primary", "series_instance_uid"])
    missing, stalled = primaries[0], primaries[-1]
    (root / "masks" / f"{missing}.nii.gz").unlink()
    inputs = [str(work / "site-a" / "ct"), str(work / "site-b" / "more")]
    split, _ = split_archive(root / "dicom", Path(inputs[0]), Path(inputs[1]))
    out = work / "out"
    drill_file, drill_marker = work / "drill.json", work / "stalled"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # never a real cluster
    env[faults.DRILL_ENV] = str(drill_file)  # the nodes' workers inherit it
    logs = {name: work / f"{name}.log" for name in ("cluster", "first", "second")}

    def child(*args: str, log: str, **kwargs) -> subprocess.Popen:
        with open(logs[log], "w") as f:
            return subprocess.Popen([sys.executable, __file__, *args], stdout=f,
                                    stderr=subprocess.STDOUT, env=env, **kwargs)

    address_file = work / "address"
    t0 = time.perf_counter()
    holder = child("cluster", str(address_file), log="cluster", stdin=subprocess.PIPE)
    try:
        address = _wait_for_address(address_file, holder, logs["cluster"])
        started = time.perf_counter() - t0
        job = ("drive", address, str(out), str(tiny_checkpoint), str(root / "masks"), *inputs)
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv(faults.DRILL_ENV, str(drill_file))
            with faults.armed("prepare", str(drill_marker), stall_s=3600, series=stalled):
                first = child(*job, log="first")
                try:
                    deadline = time.time() + KILL_WITHIN_S
                    while _ok_written(out) == 0:
                        assert first.poll() is None, (
                            f"the first driver ended (exit {first.returncode}) before it was "
                            f"killed:\n{logs['first'].read_text()[-6000:]}")
                        assert time.time() < deadline, (
                            f"no finished series after {KILL_WITHIN_S} s:\n"
                            f"{logs['first'].read_text()[-6000:]}")
                        time.sleep(0.2)
                finally:
                    first.send_signal(signal.SIGKILL)  # midway: the stalled series never ends
                    first.wait()  # reaped, as the job's supervisor would
                ok_at_kill = _ok_written(out)
        t1 = time.perf_counter()
        second = child(*job, log="second")
        assert second.wait(timeout=900) == 0, (
            f"the resumed run failed (exit {second.returncode}):\n"
            f"{logs['second'].read_text()[-8000:]}")
        lines = [ln for ln in logs["second"].read_text().splitlines() if ln.startswith(RESULT)]
        assert lines, logs["second"].read_text()[-8000:]
        result = json.loads(lines[-1].removeprefix(RESULT))
        result.update(seconds_start=round(started, 1),
                      seconds_second=round(time.perf_counter() - t1, 1))
    finally:
        holder.stdin.close()  # the holder shuts the cluster down
        try:
            holder.wait(timeout=120)
        except subprocess.TimeoutExpired:
            holder.kill()
            holder.wait()
    return {"out": str(out), "result": result, "missing": missing, "stalled": stalled,
            "inputs": inputs, "split": split, "ok_at_kill": ok_at_kill,
            "stall_log": drill_marker.read_text() if drill_marker.exists() else "",
            "truth": pd.DataFrame(truth)}


def test_every_series_once_with_its_status_on_a_multi_node_cluster(cluster_run):
    from cohort.discover.manifest import read_manifest
    from cohort.write.runs import read_table

    out = cluster_run["out"]
    manifest = read_manifest(f"{out}/index").to_pandas()
    manifest = manifest[manifest["kind"] == "series"]
    series = read_table(out, "series").to_pandas()  # both runs' rows
    assert sorted(series["series_key"]) == sorted(manifest["series_key"])  # once each
    status = dict(zip(series["series_key"], series["status"], strict=True))
    expected = {"selected": "ok", "not_selected": "skipped", "failed": "error"}
    missing = cluster_run["missing"]
    for m in manifest.itertuples():
        assert status[m.series_key] == expected[m.status], (m.series_key, m.status)
    codes = dict(zip(series["series_uid"], series["error_code"], strict=False))
    assert codes[missing] == "mask_missing"  # on an ok row that keeps its landmarks
    ok = series[series["status"] == "ok"]
    assert len(ok) == (manifest["status"] == "selected").sum() >= 8
    with_mask = ok[ok["series_uid"] != missing]
    assert with_mask["volumes_computed"].all() and ok["seconds_inference"].notna().all()
    assert (with_mask["total_calcium_voxels"] >= 0).all()
    # the series without its mask keeps its landmarks; its volumes are not computed
    assert ok.loc[ok["series_uid"] == missing, "total_calcium_voxels"].isna().all()
    # the series with slices in both folders is one series, read from both
    split = manifest[manifest["files"].map(lambda f: any(cluster_run["split"] in p for p in f))]
    assert len(split) == 1
    roots = {next(r for r in cluster_run["inputs"] if p.startswith(r + "/"))
             for p in split["files"].iloc[0]}
    assert roots == set(cluster_run["inputs"])


def test_a_run_whose_driver_was_killed_midway_is_resumed_by_the_next(cluster_run):
    from cohort.discover.manifest import MARKER
    from cohort.write.runs import published_runs, read_table, run_manifest

    out, result = cluster_run["out"], cluster_run["result"]
    killed, resumed = published_runs(out)  # nothing else under runs/
    assert resumed == result["run_id"] and killed < resumed
    series = read_table(out, "series").to_pandas()
    first = series[series["run_id"] == killed]
    second = series[series["run_id"] == resumed]
    selected = len(series[series["status"] == "ok"])
    # the first run finished some series, not all: the stalled one never ended there
    assert 1 <= cluster_run["ok_at_kill"] == (first["status"] == "ok").sum() < selected
    assert cluster_run["stalled"] in cluster_run["stall_log"]
    assert cluster_run["stalled"] in set(second["series_uid"])
    # what the first run finished is published as an interrupted run, recovered by the second
    m1 = run_manifest(out, killed)
    assert m1["interrupted"]["recovered_by"] == resumed
    assert m1["interrupted"]["rows"] == len(first) and m1["interrupted"]["not_written"] > 0
    assert {k: m1["counts"][k] for k in ("ok", "skipped", "error")} == {
        s: int((first["status"] == s).sum()) for s in ("ok", "skipped", "error")}
    # the second run reports them as finished earlier, and its manifest is complete
    m2 = run_manifest(out, resumed)
    c = m2["counts"]
    assert c == result["counts"] and "interrupted" not in m2
    assert c["finished_earlier"] == len(first)
    assert (c["ok"], c["skipped"], c["error"]) == tuple(
        int((second["status"] == s).sum()) for s in ("ok", "skipped", "error"))
    assert c["ok"] + c["skipped"] + c["error"] + c["finished_earlier"] == \
        m2["series_in_manifest"] == len(series)
    assert c["left_for_later"] == 0 and c["ok"] >= 1
    assert m2["inputs"] == cluster_run["inputs"] and m2["ray_data_stats"]
    index = json.loads((Path(out) / "index" / MARKER).read_text())
    assert index["inputs"] == cluster_run["inputs"]
    # nothing of the killed run's unfinished work is left: every part is a committed one,
    # and the output is no longer claimed
    run = Path(out) / "runs" / killed
    for table in ("landmarks", "segments"):
        assert {p.name for p in (run / table).iterdir()} <= {
            p.name for p in (run / "series").iterdir()}
    assert not (Path(out) / "_owner.json").exists()


def test_the_cluster_had_a_head_without_cpus_and_the_work_spread_over_nodes(cluster_run):
    result = cluster_run["result"]
    resources = result["nodes"]
    assert len(resources) == 1 + len(NODES)
    assert sum(1 for r in resources if r.get("CPU", 0) == 0) == 1  # the head
    assert sum(r.get("GPU", 0) for r in resources) == 1
    used = result["nodes_used"]  # of the resumed run
    prepare = [n for op, n in used.items() if "prepare_stage" in op]
    infer = [n for op, n in used.items() if "LandmarkPredictor" in op]
    assert prepare and infer, used
    assert prepare[0] >= 2, f"the CPU stage ran on one node only: {used}"
    assert infer[0] == 1  # one actor, on the GPU node (the only node with a GPU)
    print(
        f"cluster start {result['seconds_start']} s, resumed job {result['seconds_job']} s, "
        f"its driver process {result['seconds_second']} s; nodes used per operator: {used}"
    )


if __name__ == "__main__":
    if sys.argv[1] == "cluster":
        hold_cluster(sys.argv[2])
    else:
        found = drive(*sys.argv[2:])
        print(RESULT + json.dumps(found, default=str), flush=True)
