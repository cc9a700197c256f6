"""The segmenter's study end to end on a tiny synthetic cohort (Ray Train, tiny networks,
one fold): MAE pre-training feeds fine-tuning, every variant is scored on the same test
series, models carry their calibration, tables are written; and the task pieces."""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from cohort.model.zoo import load_checkpoint
from cohort.synth.config import SynthConfig
from cohort.synth.heads import generate_cohort
from cohort.train import seg_study
from cohort.train.seg_command import train_segmenter
from cohort.train.seg_study import SegStudyConfig
from cohort.train.seg_tasks import AIR_HU, PretrainTask, SegmentationTask, take_window
from cohort.train.splits import SplitConfig


def test_variants_scale_to_the_study_size_and_share_encoder_pretraining():
    vs = seg_study.VARIANTS
    assert vs["vit_patch16"].model_at("tiny") == "tiny+patch16"
    assert vs["vit"].model_at("default") == "default"
    assert vs["unet"].model_at("tiny") == "unet-tiny"
    assert vs["threshold_130hu"].model_at("tiny") is None
    assert seg_study.encoder_model("tiny+transposed") == "tiny"
    assert seg_study.encoder_model("default+nogate+patch16") == "default+patch16"


def test_an_unknown_study_size_is_refused(tmp_path):
    from cohort.errors import ConfigError

    with pytest.raises(ConfigError, match="study size 'huge'.*tiny"):
        train_segmenter(str(tmp_path), str(tmp_path / "o"), replace(SegStudyConfig(),
                                                                     size="huge"))


def test_windows_are_padded_with_air_and_clamped_inside():
    crop = np.zeros((2, 10, 40, 3), dtype=np.float32)
    crop[0] = 50.0
    w = take_window(crop, (8, 16, 4), centre=(9, 39, 1))
    assert w.shape == (2, 8, 16, 4)
    assert (w[0, :, :, :3] == 50).all()  # 10 rows > 8: clamped inside, no padding
    assert (w[0, :, :, 3] == AIR_HU).all()  # depth 3 < 4: padded with air
    assert (w[1] == 0).all()


def test_fine_tuning_starts_from_the_pretrained_encoder_only():
    task = SegmentationTask("tiny")
    pre = PretrainTask("tiny").build()
    torch.nn.init.constant_(pre.segmenter.encoder.norm.weight, 3.0)
    net = task.build()
    decoder_before = net.decoder.out.weight.clone()
    task.init_from(net, pre.segmenter.state_dict())
    assert torch.equal(net.encoder.norm.weight, pre.segmenter.encoder.norm.weight)
    assert torch.equal(net.decoder.out.weight, decoder_before)


def test_a_second_stage_starts_from_the_whole_segmentation_network():
    task = SegmentationTask("tiny")
    first = task.build()
    torch.nn.init.constant_(first.decoder.out.weight, 0.25)
    net = task.build()
    task.init_from(net, first.state_dict(), {"train_config": {"task": "segmentation"}})
    assert torch.equal(net.decoder.out.weight, first.decoder.out.weight)
    # another configuration is refused, not half loaded
    with pytest.raises(RuntimeError, match="size mismatch|Missing key|Unexpected key"):
        SegmentationTask("tiny+patch16").init_from(
            SegmentationTask("tiny+patch16").build(), first.state_dict(),
            {"train_config": {"task": "segmentation"}})


def test_validation_windows_are_the_same_every_epoch():
    task = SegmentationTask("tiny")
    crop = np.random.default_rng(0).normal(40, 20, (2, 50, 50, 12)).astype(np.float32)
    crop[1] = 0
    crop[1, 20:23, 20:23, 5] = 1
    rows = [{"series_uid": "1.2.3"}]
    a = task.batch([crop], rows, "left", None)
    b = task.batch([crop], rows, "left", None)
    assert torch.equal(a[0], b[0]) and a[2][:2].sum() > 0  # the first two hold calcium


@pytest.fixture(scope="module")
def tiny_cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("segstudy") / "cohort"
    generate_cohort(SynthConfig(patients=6, seed=5, matrix=96, thicknesses_mm=(2.5,),
                                localizer_p=0.0, second_series_p=0.0, followup_p=0.0,
                                calcium_free_p=0.0, workers=1), str(root))
    return root


@pytest.mark.timeout(900)
def test_study_of_tiny_networks(tiny_cohort, ray_local, tmp_path):
    """The study's own variants at ``size="tiny"``; the transposed-decoder ablation starts
    from the same pre-trained encoder as the ViT (one MAE run per fold)."""
    d = SegStudyConfig()
    config = replace(d, train=replace(d.train, epochs=2), pretrain=replace(d.pretrain,
                                                                          epochs=1),
                     splits=SplitConfig(folds=3, validation_fraction=0.3), only_folds=(0,),
                     windows_per_crop=1, size="tiny")
    out = tmp_path / "study"
    variants = ("vit", "vit_transposed", "threshold_130hu")
    report = train_segmenter(str(tiny_cohort), str(out), config, variants=variants)
    assert report.startswith("SYNTHETIC segmentation study: 6 series, 6 patients")
    rows = pd.read_parquet(out / "tables" / "seg_predictions.parquet")
    tests = rows.groupby("variant")["series_uid"].apply(frozenset)
    assert len(set(tests)) == 1 and len(tests) == 3  # the same test series for all
    assert rows["synthetic"].all()
    assert sorted(p.name for p in (out / "models" / "pretrained").iterdir()) == [
        "tiny-fold-0.pt"]
    for variant, network in (("vit", "tiny"), ("vit_transposed", "tiny+transposed")):
        data = (out / "models" / f"{variant}-fold-0.pt").read_bytes()
        net, meta = load_checkpoint(io.BytesIO(data))
        assert net.cfg.name == network
        cal = meta["calibration"]
        assert cal["temperature"] > 0 and 0.1 <= cal["threshold"] <= 0.9
        assert meta["synthetic"] and meta["crop"]["lateral_mm"] > 0
    assert load_checkpoint(io.BytesIO((out / "models" / "vit_transposed-fold-0.pt")
                                      .read_bytes()))[0].cfg.decoder == "transposed"
    summary = (out / "tables" / "seg_summary.md").read_text()
    assert "SYNTHETIC" in summary and "threshold_130hu" in summary
    assert "networks of size tiny" in summary
    by = pd.read_parquet(out / "tables" / "seg_by_thickness.parquet")
    assert set(by["thickness_band"]) == {"1.25-3 mm"}
    # the 130 HU rule takes bone inside the crop: far more than the calcium
    th = rows[rows["variant"] == "threshold_130hu"]
    assert (th["pred_mm3"] > th["true_mm3"]).all()


@pytest.mark.timeout(900)
def test_shipped_segmenter_recipe_runs_both_stages(tiny_cohort, ray_local, tmp_path):
    """`cohort train shipped-segmenter` at the tiny size: the first stage pre-trains and
    fine-tunes, the second continues from the first's whole model on the same folds and
    crops, and the export is the second's."""
    from cohort.train.seg_command import SegShipRecipe, ship_segmenter

    d = SegStudyConfig()
    study = replace(d, train=replace(d.train, epochs=1), pretrain=replace(d.pretrain,
                                                                          epochs=1),
                    splits=SplitConfig(folds=3, validation_fraction=0.3), only_folds=(0,),
                    windows_per_crop=1, size="tiny")
    recipe = SegShipRecipe(synth=SynthConfig(), study=study, variants=("vit",),
                           refine=replace(d.train, epochs=1, lr=1e-3), calibration=None)
    out = tmp_path / "ship"
    (out / "cohort").parent.mkdir()
    (out / "cohort").symlink_to(tiny_cohort)  # published: not generated again
    report = ship_segmenter(str(out), str(tmp_path / "seg.pt"), recipe)
    assert report.count("SYNTHETIC segmentation study: 6 series") == 2
    assert not (out / "study-refined" / "models" / "pretrained").exists()
    assert not (out / "study-refined" / "cache").exists()  # the first stage's crops
    first = str(out / "study" / "models" / "vit-fold-0.pt")
    net, meta = load_checkpoint(str(tmp_path / "seg.pt"))
    assert meta["train_config"]["init_weights"] == first and meta["synthetic"]
    assert meta["train_config"]["lr"] == 1e-3 and net.cfg.name == "tiny"


def test_cli_init_weights_reaches_the_study_config(monkeypatch):
    """`cohort train segmenter --init-weights` sets the fine-tuning start of every fold, and
    the sampling and loss options reach the training config."""
    from cohort.cli import build_parser
    from cohort.train import seg_command

    seen = {}
    monkeypatch.setattr(seg_command, "train_segmenter",
                        lambda data, out, config, **kw: seen.setdefault("config", config))
    argv = ["train", "segmenter", "--data", "d", "--out", "o", "--init-weights",
            "s3://b/models/vit-fold-{fold}.pt", "--lr", "1e-3", "--hard-positive-p", "0.5",
            "--fn-weight", "0.7"]
    args = build_parser(argv).parse_args(argv)
    args.handler(args)
    train = seen["config"].train
    assert train.init_weights == "s3://b/models/vit-fold-{fold}.pt" and train.lr == 1e-3
    assert (train.hard_positive_p, train.fn_weight) == (0.5, 0.7)
