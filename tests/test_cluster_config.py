"""cluster.yaml is a valid Ray cluster-launcher config (checked against Ray's own schema)."""

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
