"""The synthetic Clean-CC-CCII stand-in: its layout, variety, findings, determinism."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from cohort.ccccii.layout import CLASSES, discover_scans
from cohort.errors import ConfigError
from cohort.synth.ccccii import ChestConfig, generate_ccccii, render_scan, sample_findings


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    out = tmp_path_factory.mktemp("ccccii") / "set"
    cfg = ChestConfig(patients=9, seed=2, matrix=48, min_slices=6, max_slices=14)
    return out, cfg, generate_ccccii(cfg, str(out))


def test_the_set_reads_back_through_the_loader(synthetic):
    out, cfg, rows = synthetic
    scans, problems = discover_scans(str(out))
    assert problems == []  # ground_truth.csv and _SUCCESS.json are known root files
    assert sorted(s.scan_key for s in scans) == sorted(r["scan_key"] for r in rows)
    assert {s.class_name for s in scans} == set(CLASSES)
    assert len({s.patient_key for s in scans}) == cfg.patients
    ids = [s.patient_key.split("/")[1] for s in scans]
    assert len(set(ids)) < cfg.patients  # patient IDs repeat across class folders
    depths = {len(s.files) for s in scans}
    assert len(depths) > 1 and min(depths) >= 6 and max(depths) <= 14
    assert len(scans) > cfg.patients  # some patients have several scans
    marker = json.loads((out / "_SUCCESS.json").read_text())
    assert marker["synthetic"] is True and marker["scans"] == len(rows)


def test_same_seed_same_bytes(synthetic, tmp_path):
    out, cfg, _ = synthetic
    generate_ccccii(cfg, str(tmp_path / "again"))

    def digest(root):
        return {
            p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "_SUCCESS.json"
        }

    assert digest(out) == digest(tmp_path / "again")
    with pytest.raises(ConfigError, match="is not empty"):
        generate_ccccii(cfg, str(out))


def test_findings_by_class_raise_lung_density():
    """NCP: several opacities in both lungs; CP: one consolidation; Normal: none (only
    distractors); each adds density inside the lungs against the same scan without it."""
    kinds = {c: set() for c in CLASSES}
    for seed in range(20):
        for label, c in enumerate(CLASSES):
            kinds[c] |= {f.kind for f in sample_findings(label, np.random.default_rng(seed))}
    assert kinds["NCP"] >= {"ggo"} and "consolidation" not in kinds["NCP"]
    assert "consolidation" in kinds["CP"] and "ggo" not in kinds["CP"]
    assert kinds["Normal"] <= {"nodule", "band"}
    ncp = [f for f in sample_findings(0, np.random.default_rng(3)) if f.kind == "ggo"]
    assert {np.sign(f.centre[0]) for f in ncp} == {-1.0, 1.0}  # bilateral
    cp = sample_findings(1, np.random.default_rng(3))
    with_finding = render_scan(64, 20, cp, np.random.default_rng(0), 0.0).astype(float)
    without = render_scan(64, 20, [], np.random.default_rng(0), 0.0).astype(float)
    assert with_finding.sum() > without.sum() * 1.01
