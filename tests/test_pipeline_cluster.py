"""The cohort job on a simulated multi-node Ray cluster (`ray.cluster_utils.Cluster`): a head
without CPUs (it only drives the job, as in cluster.yaml and rayjob.yaml), two CPU nodes, and
a node that advertises one GPU (torch falls back to the CPU there).

Ray can be initialised only once per process and the session's `ray_local` fixture may hold
it, so the cluster and the job run in a child process: this file, run as a script. The child
prints one JSON line; the test reads the published tables and checks them.

    python tests/test_pipeline_cluster.py COHORT OUT MODEL   # what the test runs
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.slow

SALT = "cluster-test-salt"
NODES = {"cpu-a": {"num_cpus": 2}, "cpu-b": {"num_cpus": 1}, "gpu": {"num_cpus": 1, "num_gpus": 1}}
STORE = 100 * 1024**2  # object store per node: small, the job keeps what travels small
RESULT = "CLUSTER-RESULT "  # prefix of the child's JSON line


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


def run_on_cluster(cohort: str, out: str, model: str) -> dict:
    """Start the cluster, run the job with one GPU actor, stop the cluster; what happened."""
    import ray
    from ray.cluster_utils import Cluster

    from cohort.pipeline import RunConfig, run_cohort
    from cohort.write.identity import IdentityConfig

    t0 = time.perf_counter()
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "object_store_memory": STORE, "include_dashboard": False},
    )
    try:
        for resources in NODES.values():
            cluster.add_node(object_store_memory=STORE, **resources)
        cluster.wait_for_nodes(timeout=120)
        ray.init(address=cluster.address, log_to_driver=False, logging_level=logging.WARNING)
        ray.data.DataContext.get_current().enable_progress_bars = False
        nodes = [n for n in ray.nodes() if n["Alive"]]
        started = time.perf_counter() - t0
        config = RunConfig(
            model=model,
            masks=f"{cohort}/masks",
            gpus=1,
            batch_size=2,
            identity=IdentityConfig(salt=SALT),
        )
        report = run_cohort(f"{cohort}/dicom", out, config)
        return {
            "counts": report.counts,
            "run_id": report.run_id,
            "nodes": [n["Resources"] for n in nodes],
            "nodes_used": nodes_used(report.manifest["ray_data_stats"]),
            "seconds_start": round(started, 1),
            "seconds_job": round(report.seconds, 1),
        }
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.fixture(scope="module")
def cluster_run(tmp_path_factory, tiny_checkpoint):
    """A small cohort (localizers and second series to skip, one mask missing), and the job
    run on the simulated cluster in a child process."""
    import pandas as pd

    from cohort.synth.config import SynthConfig
    from cohort.synth.heads import generate_cohort

    root = tmp_path_factory.mktemp("cluster") / "cohort"
    # slices of 1.25 mm and thicker: the tiny DST takes at most 256 slices, and a deeper
    # series aborts the whole job (a pipeline issue, reported with this test)
    cfg = SynthConfig(
        patients=4,
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
    missing = primaries[0]
    (root / "masks" / f"{missing}.nii.gz").unlink()
    out = root.parent / "out"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # never a real cluster
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, __file__, str(root), str(out), str(tiny_checkpoint)],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT)]
    assert proc.returncode == 0 and lines, (
        f"the cluster run failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n"
        f"{proc.stderr[-6000:]}"
    )
    result = json.loads(lines[-1].removeprefix(RESULT))
    result["seconds_child"] = round(time.perf_counter() - t0, 1)
    return {"out": str(out), "result": result, "missing": missing, "truth": pd.DataFrame(truth)}


def test_every_series_once_with_its_status_on_a_multi_node_cluster(cluster_run):
    from cohort.discover.manifest import read_manifest
    from cohort.write.runs import read_table

    out, result = cluster_run["out"], cluster_run["result"]
    manifest = read_manifest(f"{out}/index").to_pandas()
    manifest = manifest[manifest["kind"] == "series"]
    series = read_table(out, "series").to_pandas()
    assert sorted(series["series_key"]) == sorted(manifest["series_key"])  # once each
    status = dict(zip(series["series_key"], series["status"], strict=True))
    expected = {"selected": "ok", "not_selected": "skipped", "failed": "error"}
    missing = cluster_run["missing"]
    for m in manifest.itertuples():
        assert status[m.series_key] == expected[m.status], (m.series_key, m.status)
    codes = dict(zip(series["series_uid"], series["error_code"], strict=False))
    assert codes[missing] == "mask_missing"  # on an ok row that keeps its landmarks
    ok = series[series["status"] == "ok"]
    assert len(ok) == (manifest["status"] == "selected").sum() >= 4
    with_mask = ok[ok["series_uid"] != missing]
    assert with_mask["volumes_computed"].all() and ok["seconds_inference"].notna().all()
    assert (with_mask["total_calcium_voxels"] >= 0).all()
    # the series without its mask keeps its landmarks; its volumes are not computed
    assert ok.loc[ok["series_uid"] == missing, "total_calcium_voxels"].isna().all()
    counts = result["counts"]
    assert (counts["ok"], counts["error"]) == (len(ok), (series["status"] == "error").sum())


def test_the_cluster_had_a_head_without_cpus_and_the_work_spread_over_nodes(cluster_run):
    result = cluster_run["result"]
    resources = result["nodes"]
    assert len(resources) == 1 + len(NODES)
    assert sum(1 for r in resources if r.get("CPU", 0) == 0) == 1  # the head
    assert sum(r.get("GPU", 0) for r in resources) == 1
    used = result["nodes_used"]
    prepare = [n for op, n in used.items() if "prepare_stage" in op]
    infer = [n for op, n in used.items() if "LandmarkPredictor" in op]
    assert prepare and infer, used
    assert prepare[0] >= 2, f"the CPU stage ran on one node only: {used}"
    assert infer[0] == 1  # one actor, on the GPU node (the only node with a GPU)
    print(
        f"cluster start {result['seconds_start']} s, job {result['seconds_job']} s, child "
        f"process {result['seconds_child']} s; nodes used per operator: {used}"
    )


if __name__ == "__main__":
    found = run_on_cluster(*sys.argv[1:4])
    print(RESULT + json.dumps(found, default=str), flush=True)
