"""cluster.yaml is a valid Ray cluster-launcher config (checked against Ray's own schema);
rayjob.yaml is a KubeRay RayJob for the cohort job (its structure: no CRD schema offline)."""

import json
from pathlib import Path

import jsonschema
import ray.autoscaler
import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_cluster_yaml_matches_rays_schema():
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    jsonschema.validate(config, schema)
    types = config["available_node_types"]
    assert config["head_node_type"] in types
    for spec in types.values():
        assert all(isinstance(v, int) for v in spec["resources"].values())
        assert spec["min_workers"] <= spec["max_workers"]
    assert types["gpu_inference"]["resources"]["GPU"] == 1
    assert any("pip install" in c and "cohort" in c for c in config["setup_commands"])


def _env(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def test_rayjob_yaml_runs_the_cohort_job_on_a_head_cpu_and_gpu_groups():
    """rayjob.yaml: a KubeRay RayJob (no CRD schema offline, so its structure is checked
    here) whose entrypoint is a valid `cohort run` command line."""
    from cohort.cli import build_parser

    job = yaml.safe_load((ROOT / "rayjob.yaml").read_text())
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    spec = job["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    # the entrypoint runs jobs/infer_cohort.py (in the image at /home/ray/cohort) with
    # arguments `cohort run` accepts, and no secret on the command line
    words = spec["entrypoint"].split()
    assert words[0] == "python"
    script = words[1].removeprefix("/home/ray/cohort/")
    assert script == "jobs/infer_cohort.py" and (ROOT / script).is_file()
    argv = ["run", *words[2:]]
    args = build_parser(argv).parse_args(argv)
    assert args.input and all(u.startswith("s3://") for u in args.input)  # one or more
    assert args.out and args.masks
    assert args.salt is None and "--salt" not in words
    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert not any(k.startswith(("AWS_", "COHORT_SALT")) for k in runtime_env["env_vars"])

    cluster = spec["rayClusterSpec"]
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    gpu = [
        g
        for g in groups.values()
        if "nvidia.com/gpu" in g["template"]["spec"]["containers"][0]["resources"]["limits"]
    ]
    cpu = [g for g in groups.values() if g not in gpu]
    assert len(gpu) == 1 and len(cpu) == 1
    assert gpu[0]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert args.gpus == gpu[0]["replicas"]  # one DST actor per GPU worker
    for g in groups.values():
        assert g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]

    pods = [head, *groups.values()]
    for pod in pods:
        for c in pod["template"]["spec"]["containers"]:
            for kind in ("requests", "limits"):  # whole CPUs and GPUs, as Ray counts them
                res = c["resources"][kind]
                assert str(res["cpu"]).isdigit()
                assert str(res.get("nvidia.com/gpu", 0)).isdigit()
            env = _env(c)
            for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
                assert "secretKeyRef" in env[name]["valueFrom"]
            for name, e in env.items():  # no literal secret anywhere
                if any(w in name for w in ("SECRET", "KEY", "SALT", "TOKEN", "PASSWORD")):
                    assert "value" not in e and "secretKeyRef" in e["valueFrom"], name
    head_env = _env(head["template"]["spec"]["containers"][0])
    assert head_env["COHORT_SALT"]["valueFrom"]["secretKeyRef"]["name"]
    # the salt goes only where the driver computes the keys
    for g in groups.values():
        assert "COHORT_SALT" not in _env(g["template"]["spec"]["containers"][0])
