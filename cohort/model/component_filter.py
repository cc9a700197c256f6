"""Second-stage false-positive reduction of the calcium segmenter: score each candidate
component of the calibrated probability map and keep the likely calcium.

Read top to bottom: config, the 19 component features ("hgb19"), the tree ensemble a
checkpoint carries (a fitted scikit-learn ``HistGradientBoostingClassifier`` exported to
plain arrays, evaluated here with numpy), and `filter_mask`, the step the job runs.

Candidates are the 26-connected components of p >= ``candidate_p``; each gets features of
its probabilities, its size and extent in mm, and the CT numbers around it (a ring up to
``ring_mm`` and a shell up to ``shell_mm``, Euclidean distance in mm with the voxel
spacing): calcium sits in artery wall, false positives mostly against bone. A component
whose score reaches ``keep_score`` is kept whole (every voxel with p >= ``candidate_p``).
On an unseen synthetic cohort this lifted Pearson r of log volume from 0.80 to 0.99,
linear kappa from 0.60 to 0.98 and mean Dice from 0.54 to 0.76 over thresholding at 0.9
(study in /work/seg4, `cohort.train.component_filter`).

Shapes: volumes are (H, W, D) = (rows, columns, slices), as the segmenter's crops; N
components, F = 19 features; the ensemble has T trees and M nodes in all.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage as ndi
from scipy.special import expit

from cohort.errors import ConfigError

#: the segmenter's probabilities are compared in float32 (as the job thresholds them)
#: and clipped before their logit, so a component of p = 1.0 has a finite feature
LOGIT_EPS = 1e-6
#: 26-connectivity: voxels touching at a corner belong to one component
CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)


@dataclass(frozen=True)
class ComponentFilterConfig:
    """What defines the candidates, their features and the keep rule; checkpoints carry it."""

    candidate_p: float = 0.3  # components of p >= this are the candidates (and the mask)
    sure_p: float = 0.9  # the shipped voxel threshold; its volume is one feature
    ring_mm: float = 1.5  # the ring of CT numbers right around a component
    shell_mm: float = 5.0  # the wider shell (neighbouring bone)
    bone_hu: float = 700.0  # above this a voxel counts as bone in the ring and shell
    keep_score: float = 0.3  # components scoring at or above this are kept (calib OOF)
    lower_p: float = 0.9999  # the interval's lower bound: voxels of kept components >= this

    def __post_init__(self) -> None:
        if not 0 < self.candidate_p <= self.sure_p <= self.lower_p < 1:
            raise ConfigError(f"component filter thresholds must satisfy 0 < candidate_p <= "
                              f"sure_p <= lower_p < 1; got {self.candidate_p}, "
                              f"{self.sure_p}, {self.lower_p}")
        if not 0 < self.ring_mm <= self.shell_mm:
            raise ConfigError(f"need 0 < ring_mm <= shell_mm; got {self.ring_mm}, "
                              f"{self.shell_mm}")


#: the F feature columns, in the order the ensemble was fitted on
FEATURES: tuple[str, ...] = (
    # probabilities (logits of max, mean and 90th percentile; the median as is)
    "lg_pmax", "lg_pmean", "lg_p90", "p50",
    # size: ln mm3, ln voxels, ln(1 + mm3 at sure_p), bounding box in mm (H, W, D), slices
    "log_vol", "log_n", "log_vol90", "ext_y", "ext_x", "ext_z", "nz",
    # context: ring mean / p90 / max / bone fraction, shell bone fraction / mean,
    # component mean minus ring mean
    "ring_mean", "ring_p90", "ring_max", "ring_bone", "near_bone", "near_mean", "contrast",
    # acquisition
    "thick",
)


def _logit(p: float) -> float:
    p = min(max(p, LOGIT_EPS), 1 - LOGIT_EPS)
    return float(np.log(p / (1 - p)))


def component_features(prob: np.ndarray, hu: np.ndarray, spacing_mm: tuple[float, float, float],
                       thickness_mm: float, config: ComponentFilterConfig | None = None, *,
                       voxel_mm3: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Candidate components of a probability map and their features.

    Args:
        prob: calibrated voxel probabilities (H, W, D), float32 as the segmenter gives them.
        hu: CT numbers on the same grid (H, W, D).
        spacing_mm: voxel steps along H, W, D in mm.
        thickness_mm: the series' slice thickness.
        config: thresholds and distances (defaults: `ComponentFilterConfig()`).
        voxel_mm3: volume of one voxel (default: the product of ``spacing_mm``; pass the
            grid's own for a sheared grid).

    Returns:
        (labels, features): labels (H, W, D) int32, 0 outside the candidates and k for the
        k-th component; features (N, F) float64 in `FEATURES` order, row k - 1 for
        component k. Ring and shell features are NaN when the padded box around a
        component holds no other voxel (the ensemble routes missing values).
    """
    config = config or ComponentFilterConfig()
    if prob.shape != hu.shape or prob.ndim != 3:
        raise ConfigError(f"prob {prob.shape} and hu {hu.shape} must be one (H, W, D) grid")
    spacing = np.asarray(spacing_mm, dtype=float)  # (3,)
    vmm3 = float(np.prod(spacing)) if voxel_mm3 is None else float(voxel_mm3)
    labels, n = ndi.label(prob >= config.candidate_p, structure=CONNECTIVITY)
    labels = labels.astype(np.int32, copy=False)
    features = np.full((n, len(FEATURES)), np.nan)  # (N, F)
    shape = np.array(prob.shape)
    # the box around a component reaches past the shell on every side
    pad = np.ceil(config.shell_mm / spacing).astype(int) + 1
    for k, found in enumerate(ndi.find_objects(labels), 1):
        lo = np.maximum([s.start for s in found] - pad, 0)
        hi = np.minimum([s.stop for s in found] + pad, shape)
        box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        inside = labels[box] == k
        hu_box = hu[box]
        dist = ndi.distance_transform_edt(~inside, sampling=spacing)  # mm to the component
        ring = hu_box[(dist > 0) & (dist <= config.ring_mm + 1e-6)]
        shell = hu_box[(dist > 0) & (dist <= config.shell_mm + 1e-6)]
        p, h = prob[box][inside], hu_box[inside]
        coords = np.argwhere(inside)  # (n, 3)
        extent = coords.max(0) - coords.min(0) + 1  # voxels along H, W, D
        n_vox = int(inside.sum())
        ring_mean = float(ring.mean()) if ring.size else np.nan
        features[k - 1] = (
            _logit(float(p.max())), _logit(float(p.mean())),
            _logit(float(np.percentile(p, 90))), float(np.median(p)),
            np.log(n_vox * vmm3), np.log(n_vox),
            np.log1p(int(np.count_nonzero(p >= config.sure_p)) * vmm3),
            *(extent * spacing), int(extent[2]),
            ring_mean,
            float(np.percentile(ring, 90)) if ring.size else np.nan,
            float(ring.max()) if ring.size else np.nan,
            float((ring > config.bone_hu).mean()) if ring.size else np.nan,
            float((shell > config.bone_hu).mean()) if shell.size else np.nan,
            float(shell.mean()) if shell.size else np.nan,
            float(h.mean()) - ring_mean,
            float(thickness_mm),
        )
    return labels, features


# --- the tree ensemble --------------------------------------------------------------------

FORMAT = "cohort.component_filter/1"


@dataclass(frozen=True)
class TreeEnsemble:
    """A binary gradient-boosted tree ensemble as plain arrays (all trees' nodes in one
    table; children are indices into it). ``score`` equals scikit-learn's
    ``HistGradientBoostingClassifier.predict_proba(X)[:, 1]``: a sample goes left when its
    value is <= the node's threshold, and missing values (NaN) go where the node says."""

    feature: np.ndarray  # (M,) int64, column of the split
    threshold: np.ndarray  # (M,) float64, raw-value threshold (sklearn's num_threshold)
    left: np.ndarray  # (M,) int64
    right: np.ndarray  # (M,) int64
    is_leaf: np.ndarray  # (M,) bool
    value: np.ndarray  # (M,) float64, the leaf's raw (logit) contribution
    missing_left: np.ndarray  # (M,) bool, where NaN goes
    roots: np.ndarray  # (T,) int64, each tree's first node, in boosting order
    baseline: float  # raw prediction before the first tree
    features: tuple[str, ...]  # column names, in order
    config: ComponentFilterConfig

    def raw(self, x: np.ndarray) -> np.ndarray:
        """(N, F) features -> (N,) raw scores (log-odds)."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.features):
            raise ConfigError(f"the component filter wants (N, {len(self.features)}) features "
                              f"({', '.join(self.features)}); got shape {x.shape}")
        rows = np.arange(len(x))[:, None]  # (N, 1)
        node = np.broadcast_to(self.roots, (len(x), len(self.roots))).copy()  # (N, T)
        while True:
            active = ~self.is_leaf[node]
            if not active.any():
                break
            v = x[rows, self.feature[node]]  # (N, T)
            nan = np.isnan(v)
            go_left = np.where(nan, self.missing_left[node], v <= self.threshold[node])
            step = np.where(go_left, self.left[node], self.right[node])
            node = np.where(active, step, node)
        out = np.full(len(x), self.baseline)
        for t in range(node.shape[1]):  # sklearn's order of additions, for equal floats
            out += self.value[node[:, t]]
        return out

    def score(self, x: np.ndarray) -> np.ndarray:
        """(N, F) features -> (N,) probability that a component is calcium."""
        return expit(self.raw(x))

    def to_dict(self) -> dict:
        """Plain lists, numbers and strings (``torch.load(weights_only=True)`` reads them)."""
        arrays = {k: getattr(self, k).tolist() for k in
                  ("feature", "threshold", "left", "right", "is_leaf", "value",
                   "missing_left", "roots")}
        return {"format": FORMAT, **arrays, "baseline": float(self.baseline),
                "features": list(self.features), "config": asdict(self.config)}

    @classmethod
    def from_dict(cls, d: dict) -> TreeEnsemble:
        """The inverse of `to_dict` (lists or tensors).

        Raises:
            ConfigError: not a component filter, or one for other features.
        """
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            found = d.get("format") if isinstance(d, dict) else type(d).__name__
            raise ConfigError(f"not a component filter ({FORMAT!r}); found {found!r}")
        if tuple(d["features"]) != FEATURES:
            raise ConfigError(f"component filter fitted on features {d['features']}; this "
                              f"version of cohort computes {list(FEATURES)}: refit it with "
                              "`cohort.train.component_filter.fit_component_filter`")

        def arr(k, dtype):
            v = d[k]
            return np.asarray(v.numpy() if hasattr(v, "numpy") else v, dtype=dtype)

        return cls(feature=arr("feature", np.int64), threshold=arr("threshold", np.float64),
                   left=arr("left", np.int64), right=arr("right", np.int64),
                   is_leaf=arr("is_leaf", bool), value=arr("value", np.float64),
                   missing_left=arr("missing_left", bool), roots=arr("roots", np.int64),
                   baseline=float(d["baseline"]), features=tuple(d["features"]),
                   config=ComponentFilterConfig(**d["config"]))


def export_hgb(clf, config: ComponentFilterConfig | None = None,
               features: tuple[str, ...] = FEATURES) -> TreeEnsemble:
    """A fitted binary ``HistGradientBoostingClassifier`` (numeric features only) as a
    `TreeEnsemble`.

    Raises:
        ConfigError: not fitted, not binary, or with categorical features.
    """
    predictors = getattr(clf, "_predictors", None)
    if predictors is None:
        raise ConfigError("export_hgb needs a fitted HistGradientBoostingClassifier")
    if getattr(clf, "n_trees_per_iteration_", 1) != 1 or len(clf.classes_) != 2:
        raise ConfigError("export_hgb exports binary classifiers only")
    if getattr(clf, "is_categorical_", None) is not None:
        raise ConfigError("export_hgb exports numeric features only (no categorical_features)")
    parts, roots, start = [], [], 0
    for (tree,) in predictors:  # one tree per boosting iteration (binary)
        nodes = tree.nodes  # structured array, sklearn's PREDICTOR_RECORD_DTYPE
        if nodes["is_categorical"].any():
            raise ConfigError("export_hgb exports numeric splits only")
        parts.append(nodes)
        roots.append(start)
        start += len(nodes)
    nodes = np.concatenate(parts)
    offset = np.repeat(roots, [len(p) for p in parts])  # children are per-tree indices
    leaf = nodes["is_leaf"].astype(bool)
    return TreeEnsemble(
        feature=nodes["feature_idx"].astype(np.int64),
        threshold=nodes["num_threshold"].astype(np.float64),
        left=np.where(leaf, 0, nodes["left"].astype(np.int64) + offset),
        right=np.where(leaf, 0, nodes["right"].astype(np.int64) + offset),
        is_leaf=leaf, value=nodes["value"].astype(np.float64),
        missing_left=nodes["missing_go_to_left"].astype(bool),
        roots=np.asarray(roots, dtype=np.int64),
        baseline=float(np.ravel(clf._baseline_prediction)[0]), features=tuple(features),
        config=config or ComponentFilterConfig())


# --- the filter -------------------------------------------------------------------------


@dataclass(frozen=True)
class KeptComponents:
    """What `filter_mask` decided, per candidate component (index k - 1 for label k)."""

    scores: np.ndarray  # (N,) float64
    voxels: np.ndarray  # (N,) int64
    kept: np.ndarray  # (N,) bool

    @property
    def n_candidates(self) -> int:
        return len(self.kept)

    @property
    def n_kept(self) -> int:
        return int(self.kept.sum())


def filter_mask(prob: np.ndarray, hu: np.ndarray, spacing_mm: tuple[float, float, float],
                thickness_mm: float, model: TreeEnsemble | dict,
                config: ComponentFilterConfig | None = None, *,
                voxel_mm3: float | None = None
                ) -> tuple[np.ndarray, np.ndarray, KeptComponents]:
    """The calcium mask after false-positive reduction.

    Args:
        prob, hu, spacing_mm, thickness_mm, voxel_mm3: as `component_features`.
        model: the fitted ensemble (or its `TreeEnsemble.to_dict`).
        config: default: the one the model was fitted with.

    Returns:
        (mask, lower_mask, kept): mask (H, W, D) bool, every voxel of the kept components;
        lower_mask (H, W, D) bool, their voxels with p >= ``lower_p`` (the volume
        interval's lower bound); kept, the per-component scores and decisions.
    """
    model = model if isinstance(model, TreeEnsemble) else TreeEnsemble.from_dict(model)
    config = config or model.config
    labels, x = component_features(prob, hu, spacing_mm, thickness_mm, config,
                                   voxel_mm3=voxel_mm3)
    scores = model.score(x) if len(x) else np.zeros(0)
    kept = scores >= config.keep_score
    mask = np.concatenate([[False], kept])[labels]  # (H, W, D); label 0 is background
    lower = mask & (prob >= config.lower_p)
    voxels = np.bincount(labels.ravel(), minlength=len(kept) + 1)[1:].astype(np.int64)
    return mask, lower, KeptComponents(scores=scores, voxels=voxels, kept=kept)
