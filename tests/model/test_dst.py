"""The DST: every configuration trains, padding never leaks, sizes match the paper,
checkpoints refuse pickled code and mismatched configurations."""

from __future__ import annotations

import pickle

import pytest
import torch

from cohort.errors import ConfigError
from cohort.model.compute import count_macs, count_parameters
from cohort.model.dst import (
    ABLATIONS,
    build_config,
    build_model,
    load_checkpoint,
    save_checkpoint,
)
from cohort.model.runtime import autocast, pick_device


def _loss(out, targets):
    logits = out.landmark_logits  # (B, N, D)
    return sum(torch.nn.functional.cross_entropy(logits[:, j], targets[:, j])
               for j in range(logits.shape[1]))


@pytest.mark.parametrize("name", ["tiny", "small", "paper"]
                         + [f"tiny+{a}" for a in ABLATIONS] + ["small+no_attention"])
def test_forward_and_backward(name):
    torch.manual_seed(0)
    model = build_model(name)
    size = 32 if name.startswith("paper") else 64
    x = torch.randn(2, 1, size, size, 12)
    depths = torch.tensor([12, 9])
    out = model(x, depths)
    assert out.landmark_logits.shape == (2, 6, 12)
    assert out.class_logits.shape == (2, 3)
    # targets inside each volume's real slices: the last 9 for the left-padded second one
    offset = 3 if model.cfg.padding == "left" else 0
    targets = torch.tensor([[1, 4, 7, 2, 5, 8], [o + offset for o in (0, 3, 6, 1, 4, 8)]])
    loss = _loss(out, targets) + torch.nn.functional.cross_entropy(out.class_logits,
                                                                   torch.tensor([0, 2]))
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    probs = out.landmark_probabilities()
    assert probs[1].shape == (6, 9)
    torch.testing.assert_close(probs[1].sum(-1), torch.ones(6))


@pytest.mark.parametrize("name", ["small", "tiny+right_padding", "tiny+no_attention"])
def test_same_probabilities_alone_or_padded_beside_a_longer_volume(name):
    torch.manual_seed(1)
    model = build_model(name).eval()
    a, b = torch.randn(1, 1, 64, 64, 20), torch.randn(1, 1, 64, 64, 33)
    batch = torch.zeros(2, 1, 64, 64, 33)
    if model.cfg.padding == "left":
        batch[0, ..., 13:] = a[0]
    else:
        batch[0, ..., :20] = a[0]
    batch[1] = b[0]
    with torch.no_grad():
        alone = model(a).landmark_probabilities()[0]
        together = model(batch, torch.tensor([20, 33])).landmark_probabilities()
    torch.testing.assert_close(together[0], alone, atol=1e-5, rtol=1e-4)
    assert together[0].shape == (6, 20)


def test_padding_values_do_not_matter():
    """Whatever sits in the padded slices (garbage from a careless loader) changes nothing."""
    torch.manual_seed(2)
    model = build_model("tiny").eval()
    x = torch.randn(1, 1, 32, 32, 16)
    noisy = x.clone()
    noisy[..., :6] = 1000 * torch.randn(1, 1, 32, 32, 6)
    with torch.no_grad():
        p1 = model(x, torch.tensor([10])).landmark_probabilities()[0]
        p2 = model(noisy, torch.tensor([10])).landmark_probabilities()[0]
    torch.testing.assert_close(p1, p2)


def test_depth_beyond_max_len_is_refused_not_cropped():
    model = build_model("tiny", max_len=16)
    with pytest.raises(ValueError, match="exceed this model's max_len of 16"):
        model(torch.randn(1, 1, 32, 32, 17))


def test_paper_size_matches_the_publication_and_small_is_a_quarter_or_less():
    def count(name):  # attention included (see cohort.model.compute)
        model = build_model(name)
        return count_parameters(model), count_macs(model, torch.randn(1, 1, 128, 128, 64))

    params, macs = count("paper")
    assert params == pytest.approx(137e6, rel=0.02)
    assert macs == pytest.approx(36.4e9, rel=0.02)
    _, small_macs = count("small")
    assert small_macs <= macs / 4


def test_unknown_names_are_clear_errors():
    with pytest.raises(ConfigError, match="unknown DST configuration 'huge'"):
        build_model("huge")
    with pytest.raises(ConfigError, match="unknown ablation"):
        build_config("small+no_encoder")
    with pytest.raises(ConfigError, match="bad override"):
        build_config("small", colour="red")
    assert build_config("paper+blocks_1").n_blocks == 1


def test_checkpoint_round_trip_and_refusals(tmp_path):
    torch.manual_seed(3)
    model = build_model("tiny").eval()
    path = tmp_path / "dst.pt"
    save_checkpoint(path, model, temperatures=[1.0] * 6, trained_on="SYNTHETIC")
    loaded, meta = load_checkpoint(path, expect="tiny")
    assert meta["trained_on"] == "SYNTHETIC"
    x = torch.randn(1, 1, 32, 32, 10)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x).landmark_logits, model(x).landmark_logits)
    with pytest.raises(ConfigError, match="differs from the requested 'small'"):
        load_checkpoint(path, expect="small")


class Payload:
    def __reduce__(self):  # what a malicious checkpoint would carry
        return (print, ("arbitrary code ran",))


def test_pickled_code_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"format": "cohort.dst/1", "config": {}, "state_dict": {}, "x": Payload()},
               path, pickle_protocol=pickle.DEFAULT_PROTOCOL)
    with pytest.raises(ConfigError, match="weights_only=True"):
        load_checkpoint(path)
    assert "arbitrary code ran" not in capsys.readouterr().out
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="refusing checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")


def test_runtime_falls_back_to_cpu_with_the_same_code():
    device = pick_device(prefer_gpu=True)
    if not torch.cuda.is_available():
        assert device.type == "cpu"
    model = build_model("tiny").to(device).eval()
    with torch.no_grad(), autocast(device):
        out = model(torch.randn(1, 1, 32, 32, 8, device=device))
    assert out.landmark_logits.dtype == torch.float32
    # bf16 autocast (the GPU setting) runs on the CPU too and agrees to bf16 precision
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        bf = model.cpu()(torch.ones(1, 1, 32, 32, 8)).landmark_probabilities()[0]
    with torch.no_grad():
        fp = model(torch.ones(1, 1, 32, 32, 8)).landmark_probabilities()[0]
    torch.testing.assert_close(bf, fp, atol=0.05, rtol=0.1)
