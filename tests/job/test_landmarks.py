"""The DST actor: batches of mixed depth give the same landmarks as one volume at a time."""

import numpy as np
import pandas as pd
import torch

from cohort.job.landmarks import LandmarkPredictor
from cohort.job.packing import pack, unpack
from cohort.model.dst import build_model, save_checkpoint


def _row(depth: int, rng, status="ok"):
    x = rng.random((32, 32, depth)).astype(np.float16)
    return {"status": status, "model_input": pack(x=x, slice_index=np.arange(depth) * 2,
                                                  slice_z_mm=np.arange(depth) * 2.5 - 40.0)}


def test_batched_equals_single_and_maps_back_to_volume_slices(tmp_path):
    torch.manual_seed(1)
    path = tmp_path / "m.pt"
    save_checkpoint(path, build_model("tiny").eval(), model_input={"size": 32},
                    temperatures={n: 2.0 for n in (
                        "right_carotid_canal", "right_petrolingual", "right_anterior_clinoid",
                        "left_carotid_canal", "left_petrolingual", "left_anterior_clinoid")})
    rng = np.random.default_rng(0)
    rows = [_row(d, rng) for d in (20, 9, 33, 20)] + [{"status": "error", "model_input": None}]
    batched = LandmarkPredictor(str(path), batch_size=4)(pd.DataFrame(rows))
    single = LandmarkPredictor(str(path), batch_size=1)(pd.DataFrame(rows))
    cols = [c for c in batched.columns if c.endswith(("_slice", "_prob"))]
    pd.testing.assert_frame_equal(batched[cols], single[cols], atol=1e-4, check_dtype=False)
    first = batched.iloc[0]
    assert first["right_carotid_canal_slice"] % 2 == 0  # slice_index maps model -> volume
    assert 0 <= first["right_carotid_canal_slice"] < 40
    assert first["right_carotid_canal_z_mm"] == first["right_carotid_canal_slice"] / 2 * 2.5 - 40
    assert batched.iloc[4][cols].isna().all()  # the error row is left alone
    assert batched["model_input"].isna().all()  # nothing heavy travels on


def test_packing_round_trip():
    a = np.arange(12, dtype=np.int64).reshape(3, 4)
    out = unpack(pack(a=a, b=np.float32(2.5)))
    assert (out["a"] == a).all() and out["b"] == np.float32(2.5)


def test_a_series_the_model_refuses_is_an_error_row_not_a_failed_batch(tmp_path):
    path = tmp_path / "m.pt"
    save_checkpoint(path, build_model("tiny", max_len=24), model_input={"size": 32})
    rng = np.random.default_rng(0)
    rows = [_row(20, rng), _row(30, rng), _row(12, rng)]  # 30 slices > max_len 24
    out = LandmarkPredictor(str(path), batch_size=3)(pd.DataFrame(rows))
    assert list(out["status"]) == ["ok", "error", "ok"]
    assert out.loc[1, "error_code"] == "processing_failed"
    assert "inference" in out.loc[1, "error_detail"]
    assert out.loc[[0, 2], "right_carotid_canal_slice"].notna().all()


def test_depth_groups_bound_the_padding():
    from cohort.job.landmarks import depth_groups

    depths = [300, 40, 41, 290, 45, 120, 44, 100]
    groups = depth_groups(depths, batch_size=3)
    assert sorted(i for g in groups for i in g) == list(range(len(depths)))
    for g in groups:
        d = [depths[i] for i in g]
        assert len(g) <= 3 and max(d) <= 1.25 * min(d)
    assert [depths[i] for i in groups[0]] == [40, 41, 44]


def test_landmarks_come_back_in_anatomical_order_and_the_moved_ones_are_named(tmp_path):
    """An untrained network's most probable slices are often out of order: the predictor
    reports the most probable ordered ones and names the landmarks it moved; QC then
    flags the series and counts those landmarks as low confidence."""
    from cohort.anatomy import LANDMARK_KINDS, LANDMARKS, SIDES
    from cohort.job.landmarks import _softmax
    from cohort.quantify.qc import flag_reordered

    path = tmp_path / "m.pt"
    moved_seen = 0
    for seed in range(6):
        torch.manual_seed(seed)
        save_checkpoint(path, build_model("tiny").eval(), model_input={"size": 32})
        rows = [_row(25, np.random.default_rng(seed + k)) for k in range(3)]
        predictor = LandmarkPredictor(str(path), batch_size=3)
        out = predictor(pd.DataFrame(rows))
        logits = predictor.predict([unpack(r["model_input"])["x"] for r in rows])
        for i, r in out.iterrows():
            for side in SIDES:
                k = [r[f"{side}_{kind}_slice"] for kind in LANDMARK_KINDS]
                assert k[0] <= k[1] <= k[2]
            top = _softmax(logits[i], predictor.temperatures).argmax(axis=1) * 2  # slice_index
            moved = [n for j, n in enumerate(LANDMARKS) if r[f"{n}_slice"] != top[j]]
            named = r["reordered_landmarks"] if isinstance(r["reordered_landmarks"], str) else ""
            assert named == ",".join(moved)
            moved_seen += bool(moved)
    assert moved_seen  # the case happened
    values = flag_reordered({"qc_flags": ["calcium_above_clinoid"],
                             "low_confidence_landmarks": ["left_petrolingual"]},
                            "right_petrolingual,right_anterior_clinoid")
    assert values["qc_flags"] == ["low_landmark_confidence", "landmarks_out_of_order",
                                  "calcium_above_clinoid"]
    assert values["low_confidence_landmarks"] == [n for n in LANDMARKS if n in {
        "left_petrolingual", "right_petrolingual", "right_anterior_clinoid"}]
    assert flag_reordered({"qc_flags": []}, None) == {"qc_flags": []}
    assert flag_reordered({"qc_flags": []}, float("nan")) == {"qc_flags": []}


def test_the_checkpoints_decoding_mirror_offsets_and_median_is_what_the_job_reports(tmp_path):
    from cohort.anatomy import LANDMARKS
    from cohort.job.landmarks import _softmax
    from cohort.model.calibration import landmark_confidence
    from cohort.model.decoding import MIRRORED, LandmarkDecoding, combine, ordered_slices

    torch.manual_seed(3)
    path = tmp_path / "m.pt"
    decoding = LandmarkDecoding(mirror=True, rule="median", fitted_on="a test",
                                offsets_mm={"mid": {n: 1.0 for n in LANDMARKS}})
    save_checkpoint(path, build_model("tiny").eval(), model_input={"size": 32},
                    decoding=decoding.to_metadata(),
                    confidence_threshold={"value": 0.3, "confidence": "within_1_slice"})
    rng = np.random.default_rng(5)
    rows = [_row(d, rng) for d in (20, 26)]
    predictor = LandmarkPredictor(str(path), batch_size=2)
    assert predictor.decoding == decoding
    out = predictor(pd.DataFrame(rows))
    for i, r in enumerate(rows):
        x = unpack(r["model_input"])["x"]
        plain = predictor.predict([x])[0]
        mirrored = predictor.predict([x], mirror=True)[0]
        # the mirrored pass is the plain pass of the mirrored volume, sides swapped back
        flipped = predictor.predict([np.ascontiguousarray(x[:, ::-1])])[0]
        assert np.allclose(mirrored, flipped[list(MIRRORED)], atol=1e-5)
        probs = combine(_softmax(plain, predictor.temperatures),
                        _softmax(mirrored, predictor.temperatures), 2.5, decoding)
        top, _ = ordered_slices(probs, "median")
        assert [out.iloc[i][f"{n}_slice"] for n in LANDMARKS] == (top * 2).tolist()
        conf = landmark_confidence(probs, top, "within_1_slice")
        assert np.allclose([out.iloc[i][f"{n}_prob"] for n in LANDMARKS], conf)
