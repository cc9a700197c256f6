"""`LandmarkPredictor`: the DST in a Ray Data actor, batches of similar depth, left-padded.

The actor loads the weights itself, from a path (never from constructor arguments), pins
torch's thread count, and runs on the GPU with bf16 autocast when Ray gave it one, else on
the CPU with the same code. Probabilities are temperature-calibrated when the checkpoint
carries temperatures (fitted on the validation split of its training fold); the confidence
threshold fitted on that split (`cohort.train.calibration.fit_confidence_threshold`) goes on
every predicted row as ``confidence_threshold``, null when the checkpoint carries none.

A landmark's probability is what the checkpoint's threshold measures
(`cohort.model.calibration.CONFIDENCE_MEASURES`): for models trained since Gaussian
targets, the probability that the true slice lies within one slice of the reported one.

Landmarks are chosen as the checkpoint's decoding says (`cohort.model.decoding`: with
the shipped model, the mean of the plain and the left-right mirrored pass, moved by the
location offsets measured on held-out scans, and the slices of least expected error) and
keep anatomical order on each side (`cohort.model.decoding.ordered_slices`); where a
landmark's own best slice broke that order, the row names it in ``reordered_landmarks``
(comma-separated) and the QC flags it (`cohort.job.finish`).
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd
import torch

from cohort.anatomy import LANDMARKS
from cohort.errors import ErrorCode
from cohort.job.packing import unpack
from cohort.model.calibration import landmark_confidence
from cohort.model.decoding import MIRRORED, LandmarkDecoding, combine, ordered_slices
from cohort.model.runtime import autocast, pick_device, set_threads
from cohort.storage import StorageOptions

logger = logging.getLogger(__name__)


def _softmax(logits: np.ndarray, temperatures: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) / temperatures[:, None]
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def depth_groups(depths: list[int], batch_size: int, max_ratio: float = 1.25
                 ) -> list[list[int]]:
    """Indices grouped into batches of at most ``batch_size`` whose deepest volume is at most
    ``max_ratio`` times the shallowest: padding never more than ~25% of a batch's work."""
    order = sorted(range(len(depths)), key=lambda i: depths[i])
    groups: list[list[int]] = []
    for i in order:
        g = groups[-1] if groups else None
        if g and len(g) < batch_size and depths[i] <= max_ratio * depths[g[0]]:
            g.append(i)
        else:
            groups.append([i])
    return groups


class LandmarkPredictor:
    """Callable class for ``Dataset.map_batches(..., batch_format="pandas")``.

    Rows with ``status == "ok"`` and a ``model_input`` get the six landmarks: volume slice
    index, z (mm) and probability per landmark, and the model's ``confidence_threshold``
    (None without one); the packed model input is dropped.
    """

    def __init__(self, model_url: str | None, *, threads: int = 1, batch_size: int = 4,
                 prefer_gpu: bool = True, sha256: str | None = None,
                 storage: StorageOptions | None = None):
        """Args:
            model_url: the checkpoint (path or URL, fetched here, on the actor's node);
                None: the checkpoint shipped in the package installed on this node.
            sha256: when given, the file found here must have this checksum (the one the
                driver checked and records in the run manifest).
        """
        from cohort.job.checkpoint import shipped_checkpoint, verified_copy
        from cohort.model.calibration import (
            confidence_measure,
            temperatures_from_metadata,
            threshold_from_metadata,
        )
        from cohort.model.dst import load_checkpoint

        set_threads(threads)
        self.device = pick_device(prefer_gpu)
        model_path = verified_copy(model_url or shipped_checkpoint(), storage, sha256)
        model, meta = load_checkpoint(model_path, map_location="cpu")
        self.model = model.to(self.device).eval()
        temps = meta.get("temperatures")
        self.temperatures = (temperatures_from_metadata(temps) if temps
                             else np.ones(len(LANDMARKS)))
        self.confidence_threshold = threshold_from_metadata(meta.get("confidence_threshold"))
        self.confidence = confidence_measure(meta.get("confidence_threshold"))
        self.decoding = LandmarkDecoding.from_metadata(meta.get("decoding"))
        if self.confidence_threshold is None:
            logger.warning("checkpoint %s carries no confidence threshold: the low-confidence "
                           "flag uses QuantifyConfig's fallback (rows: confidence_threshold "
                           "null)", model_url or "shipped")
        self.batch_size = max(1, batch_size)
        logger.info("landmark model %s on %s", model.cfg.name, self.device)

    def predict(self, arrays: list[np.ndarray], mirror: bool = False) -> list[np.ndarray]:
        """(H, W, D_b) inputs -> per volume (6, D_b) logits, in batches of similar depth.
        ``mirror``: of the inputs mirrored left-right, rows back in `LANDMARKS` order."""
        out: list[np.ndarray | None] = [None] * len(arrays)
        left = self.model.cfg.padding == "left"
        for idx in depth_groups([a.shape[-1] for a in arrays], self.batch_size):
            d_max = max(arrays[i].shape[-1] for i in idx)
            h, w = arrays[idx[0]].shape[:2]
            x = torch.zeros(len(idx), 1, h, w, d_max)
            for b, i in enumerate(idx):
                d = arrays[i].shape[-1]
                start = d_max - d if left else 0
                x[b, 0, :, :, start:start + d] = torch.from_numpy(arrays[i].astype(np.float32))
            depths = torch.tensor([arrays[i].shape[-1] for i in idx])
            if mirror:
                x = torch.flip(x, dims=[3])  # columns run along x: left <-> right
            with torch.no_grad(), autocast(self.device):
                logits = self.model(x.to(self.device), depths.to(self.device)).landmark_logits
            logits = logits.float().cpu().numpy()
            if mirror:
                logits = logits[:, list(MIRRORED)]
            for b, i in enumerate(idx):
                d = arrays[i].shape[-1]
                start = d_max - d if left else 0
                out[i] = logits[b, :, start:start + d]
        return out  # type: ignore[return-value]

    def _both(self, arrays: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """Per volume, the plain logits and, when the decoding mirrors, the mirrored ones."""
        plain = self.predict(arrays)
        mirrored = self.predict(arrays, mirror=True) if self.decoding.mirror else [None] * len(
            arrays)
        return list(zip(plain, mirrored, strict=True))

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        t0 = time.perf_counter()
        batch = batch.copy()
        todo = [i for i, (st, mi) in enumerate(zip(batch["status"], batch["model_input"],
                                                     strict=True))
                if st == "ok" and mi is not None]
        packed = [unpack(batch["model_input"].iloc[i]) for i in todo]
        try:
            logits = self._both([p["x"] for p in packed]) if packed else []
        except Exception:  # noqa: BLE001  (find the series at fault; never fail the batch)
            logits, kept = [], []
            for i, p in zip(todo, packed, strict=True):
                try:
                    logits.append(self._both([p["x"]])[0])
                    kept.append((i, p))
                except Exception as e:  # noqa: BLE001
                    logger.exception("inference failed for row %d", i)
                    batch.loc[batch.index[i], ["status", "error_code", "error_detail"]] = [
                        "error", ErrorCode.PROCESSING_FAILED.value,
                        f"inference: {type(e).__name__}: {e}"]
            todo, packed = [i for i, _ in kept], [p for _, p in kept]
        cols: dict[str, list] = {f"{n}_{c}": [None] * len(batch) for n in LANDMARKS
                                 for c in ("slice", "z_mm", "prob")}
        cols["reordered_landmarks"] = [None] * len(batch)
        for i, p, (lg, mlg) in zip(todo, packed, logits, strict=True):
            z = np.asarray(p["slice_z_mm"], dtype=np.float64)
            spacing = float(np.median(np.abs(np.diff(z)))) if len(z) > 1 else 0.0
            probs = combine(_softmax(lg, self.temperatures),
                            None if mlg is None else _softmax(mlg, self.temperatures),
                            spacing, self.decoding)
            top, moved = ordered_slices(probs, self.decoding.rule)
            cols["reordered_landmarks"][i] = ",".join(moved) or None
            conf = landmark_confidence(probs, top, self.confidence)
            for n, name in enumerate(LANDMARKS):
                cols[f"{name}_slice"][i] = int(p["slice_index"][top[n]])
                cols[f"{name}_z_mm"][i] = float(p["slice_z_mm"][top[n]])
                cols[f"{name}_prob"][i] = float(conf[n])
        cols["confidence_threshold"] = [self.confidence_threshold if i in set(todo) else None
                                        for i in range(len(batch))]
        for k, v in cols.items():
            batch[k] = v
        per = (time.perf_counter() - t0) / max(1, len(todo))
        batch["seconds_inference"] = [round(per, 4) if i in set(todo) else None
                                      for i in range(len(batch))]
        batch["model_input"] = None
        return batch
