"""The calcium segmenter's ViT: shapes, MAE masking, decoders, sliding-window inference,
checkpoints."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from cohort.errors import ConfigError
from cohort.model import segmenter, unet3d
from cohort.model.segmenter import (
    build_config,
    build_model,
    crop_logits,
    load_checkpoint,
    mae_loss,
    patchify,
    probabilities,
    random_keep,
    save_checkpoint,
    upsampling_stages,
)


@pytest.mark.parametrize("name", ["tiny", "tiny+transposed", "tiny+patch16", "tiny+patch4"])
def test_segmentation_output_has_the_input_shape(name):
    net = build_model(name).eval()
    x = torch.rand(2, 1, *net.cfg.window)
    assert net(x).shape == x.shape


def test_decoders_differ_as_named():
    interp = build_model("tiny")
    transposed = build_model("tiny+transposed")
    kinds = {type(m).__name__ for m in transposed.modules()}
    assert "ConvTranspose3d" in kinds
    assert "ConvTranspose3d" not in {type(m).__name__ for m in interp.modules()}


def test_upsampling_stages_bring_tokens_back_to_voxels():
    for patch in [(8, 8, 2), (16, 16, 4), (4, 4, 2), (8, 8, 1)]:
        total = np.prod(upsampling_stages(patch), axis=0) if upsampling_stages(patch) else 1
        assert tuple(np.atleast_1d(total)) == patch


def test_patchify_follows_the_embedding_token_order():
    """Token n of the patch embedding sees exactly patch n of `patchify`: a convolution
    whose kernel sums its patch gives the patch sums in the same order."""
    cfg = build_config("tiny")
    x = torch.rand(1, 1, *cfg.window)
    conv = torch.nn.Conv3d(1, 1, cfg.patch, stride=cfg.patch, bias=False)
    torch.nn.init.ones_(conv.weight)
    tokens = conv(x).flatten(2).transpose(1, 2)[0, :, 0]
    assert torch.allclose(tokens, patchify(x, cfg.patch)[0].sum(-1), atol=1e-4)


def test_random_keep_hides_the_configured_fraction():
    cfg = build_config("tiny")
    keep = random_keep(3, cfg, generator=torch.Generator().manual_seed(0))
    assert keep.shape == (3, round(cfg.tokens * (1 - cfg.mask_ratio)))
    assert all(len(set(k.tolist())) == keep.shape[1] for k in keep)  # no token twice


def test_mae_loss_counts_hidden_patches_only():
    cfg = build_config("tiny")
    x = torch.rand(1, 1, *cfg.window)
    keep = random_keep(1, cfg, generator=torch.Generator().manual_seed(1))
    pred = torch.zeros(1, cfg.tokens, int(np.prod(cfg.patch)))
    base = mae_loss(pred, x, keep, cfg.patch)
    visible_changed = pred.clone()
    visible_changed[0, keep[0]] = 5.0  # nonsense on the visible patches: no effect
    assert mae_loss(visible_changed, x, keep, cfg.patch) == pytest.approx(float(base))
    hidden = torch.ones(cfg.tokens, dtype=torch.bool)
    hidden[keep[0]] = False
    hidden_changed = pred.clone()
    hidden_changed[0, hidden] = 5.0
    assert mae_loss(hidden_changed, x, keep, cfg.patch) > base


def test_reconstruction_needs_the_mae_head():
    net = build_model("tiny")
    with pytest.raises(RuntimeError, match="MAE head"):
        net.reconstruct(torch.rand(1, 1, *net.cfg.window), random_keep(1, net.cfg))
    with_mae = build_model("tiny", with_mae=True)
    out = with_mae.reconstruct(torch.rand(1, 1, *net.cfg.window), random_keep(1, net.cfg))
    assert out.shape == (1, net.cfg.tokens, int(np.prod(net.cfg.patch)))


def test_bad_configurations_are_refused_with_the_reason():
    with pytest.raises(ConfigError, match="whole number of patches"):
        build_config("tiny", window=(30, 32, 8))
    with pytest.raises(ConfigError, match="unknown segmenter configuration"):
        build_config("huge")
    with pytest.raises(ConfigError, match="unknown segmenter ablation"):
        build_config("tiny+nonsense")


def test_crop_logits_cover_crops_of_any_shape():
    """Smaller than a window along one axis, larger along others: one finite logit per
    voxel."""
    torch.manual_seed(0)
    net = build_model("tiny").eval()
    crop = np.random.default_rng(0).normal(40, 30, (45, 70, 5)).astype(np.float32)
    out = crop_logits(net, crop)
    assert out.shape == crop.shape and np.isfinite(out).all()


def test_probabilities_are_a_tempered_sigmoid():
    z = np.array([-800.0, -2.0, 0.0, 2.0, 800.0], dtype=np.float32)
    p = probabilities(z, 2.0)
    assert np.allclose(p, 1 / (1 + np.exp(-z.astype(np.float64) / 2)), atol=1e-6)


def test_checkpoint_round_trip_drops_the_mae_head_unless_asked():
    net = build_model("tiny", with_mae=True)
    buf = io.BytesIO()
    save_checkpoint(buf, net, synthetic=True)
    buf.seek(0)
    loaded, meta = load_checkpoint(buf)
    assert loaded.mae is None and meta["synthetic"] is True
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, net.state_dict()[k])
    buf = io.BytesIO()
    save_checkpoint(buf, net, keep_mae=True)
    buf.seek(0)
    again, _ = load_checkpoint(buf, with_mae=True)
    assert torch.equal(again.mae.out.weight, net.mae.out.weight)


def test_checkpoints_of_other_kinds_are_refused(tmp_path):
    path = tmp_path / "bare.pt"
    torch.save({"w": torch.zeros(1)}, path)
    with pytest.raises(ConfigError, match="not a cohort segmenter checkpoint"):
        load_checkpoint(path)
    pickled = tmp_path / "code.pt"
    torch.save({"format": segmenter.FORMAT, "config": object()}, pickled)
    with pytest.raises(ConfigError, match="weights_only=True"):
        load_checkpoint(pickled)


@pytest.mark.parametrize("build", [lambda: build_model("tiny"),
                                   lambda: unet3d.build_model("unet-tiny")])
def test_the_gate_leaves_only_candidate_voxels_to_the_network(build):
    """Below 130 HU the logit is GATED_LOGIT and no gradient reaches the network through
    those voxels; at or above it the network decides (ViT and U-Net alike)."""
    torch.manual_seed(0)
    net = build()
    hu = torch.full((1, 1, *net.cfg.window), 40.0)
    hu[..., 4:9, 4:9, 2:5] = 600.0  # a bright block: candidates
    hu[..., 20, 20, 1] = 129.0  # just under the rule
    x = segmenter.scale_hu(hu).requires_grad_(True)
    out = net(x)
    bright = hu >= segmenter.CALCIUM_HU
    assert torch.all(out[~bright] == segmenter.GATED_LOGIT)
    assert torch.all(out[bright] > segmenter.GATED_LOGIT / 2)
    assert not segmenter.is_gated(out[bright].detach().numpy()).any()
    out[~bright].sum().backward()
    assert all(p.grad is None or not p.grad.any() for p in net.parameters())


def test_the_ungated_ablation_decides_every_voxel():
    net = build_model("tiny+nogate").eval()
    x = segmenter.scale_hu(torch.full((1, 1, *net.cfg.window), 40.0))
    assert not segmenter.is_gated(net(x).detach().numpy()).any()


def test_gated_voxels_stay_gated_through_window_blending():
    """Overlapping windows blend logits; a voxel under 130 HU is gated in every window, so
    its blended logit still reads as gated and the probability is ~0 at any temperature."""
    net = build_model("tiny").eval()
    crop = np.full((45, 70, 11), 40.0, dtype=np.float32)
    crop[10:20, 30:40, 3:6] = 500.0
    z = crop_logits(net, crop)
    gated = segmenter.is_gated(z)
    assert np.array_equal(gated, crop < segmenter.CALCIUM_HU)
    assert probabilities(z[gated], 5.0).max() < 1e-3


def test_the_input_map_keeps_dense_plaque_apart_from_cortical_bone():
    hu = np.array([-1000.0, -100.0, 45.0, 130.0, 700.0, 900.0, 1300.0, 1800.0, 3000.0])
    x = segmenter.scale_hu(hu)  # the default map
    assert np.all(np.diff(x) >= 0) and x[0] == 0 and x[-1] == 1
    assert x[5] < x[6] < x[7]  # a 900 HU plaque, 1300 HU bone: no longer both saturated
    assert x[3] - x[2] > 0.07  # the 130 HU rule's neighbourhood keeps most of its contrast
    t = segmenter.scale_hu(torch.as_tensor(hu))
    np.testing.assert_allclose(t.numpy(), x, atol=1e-6)
    window = segmenter.scale_hu(hu, segmenter.build_config("tiny+windowhu").hu_knots)
    assert window[5] == window[6] == 1.0 and window[1] == 0.0
    np.testing.assert_allclose(window[3], (130 + 100) / 800, atol=1e-6)


@pytest.mark.parametrize("knots", [((0.0, 0.0),), ((700.0, 0.0), (100.0, 1.0)),
                                   ((0.0, 1.0), (100.0, 0.0))])
def test_bad_input_maps_are_refused(knots):
    with pytest.raises(ConfigError, match="hu_knots"):
        segmenter.build_model("tiny", hu_knots=knots)


@pytest.mark.parametrize("kind", ["vit", "unet"])
def test_checkpoints_carry_their_input_map_and_old_ones_keep_theirs(kind):
    if kind == "vit":
        net, mod = segmenter.build_model("tiny", hu_knots=((-200.0, 0.0), (900.0, 1.0))), \
            segmenter
    else:
        net, mod = unet3d.build_model("unet-tiny", hu_knots=((-200.0, 0.0), (900.0, 1.0))), \
            unet3d
    buf = io.BytesIO()
    mod.save_checkpoint(buf, net)
    buf.seek(0)
    back, _ = mod.load_checkpoint(buf)
    assert back.cfg.hu_knots == ((-200.0, 0.0), (900.0, 1.0))
    # a checkpoint written before the knots existed reads CT through the old window
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)
    del ckpt["config"]["hu_knots"]
    old = io.BytesIO()
    torch.save(ckpt, old)
    old.seek(0)
    back, _ = mod.load_checkpoint(old)
    assert back.cfg.hu_knots == segmenter.LEGACY_HU_KNOTS
