"""Score images against reference statistics: FD (FD-classifier or FID), KID, precision/recall,
Inception Score (IS or IS-classifier), per-class recall, and for conditional models conditional
accuracy, intra-class FD and per-class diversity.

``score_images`` is the library entry point (numpy in, dict out) used by ``gan-eval score`` and by
export's FID gate on images coming out of ONNX Runtime; ``score_generator`` generates from a torch
generator with the same seeds → z rule as export, then calls it.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

# The seed -> z and seed -> class rules have one home, in torch-free code every layer imports:
# the gate, the server and these metrics use the same latents for the same seeds.
from gancore.sampling import labels_for_seeds, z_from_seeds
from training.eval.errors import EvalError
from training.eval.features import Extractor, as_batches, get_extractor
from training.eval.fid import frechet_distance, warn_if_singular
from training.eval.inception_score import SPLITS as IS_SPLITS
from training.eval.inception_score import inception_score
from training.eval.kid import kid
from training.eval.prdc import (
    balanced_precision_recall,
    balanced_recall,
    mean_pairwise_distance,
)
from training.eval.stats import (
    FeatureStats,
    RefStats,
    check_compatible,
    check_same_data,
    load_ref,
)

__all__ = [
    "score_images",
    "score_features",
    "score_generator",
    "generate_images",
    "z_from_seeds",
    "labels_for_seeds",
    "load_ref",
    "get_extractor",
    "extractor_for_ref",
    "compute_stats",
]

KEEP = 10_000  # raw features kept for KID / precision-recall / per-class figures
KID_SUBSETS, KID_SUBSET_SIZE = 100, 1000
PR_K = 3
# Precision/recall are measured on equal-size sets (the 359 held-out digits vs as many generated
# images) and averaged over up to 10 disjoint draws of the larger set. One draw: the min per-class
# recall of one DCGAN swung 0.58-0.81 and its recall 0.82-0.89 between N = 1,000 and 10,000.
PR_DRAWS = 10
DIVERSITY_MAX_PER_CLASS = 500
METRIC_NOTES = {
    "FD-classifier": "FD-classifier is a Fréchet distance on a dataset-specific classifier's "
    "features: compare it only with FD-classifier values made with the same classifier file "
    "(same sha256) and N; it is not comparable with Inception FID",
    "FID": "FID: Fréchet distance on the standard Inception-v3 pool3 features (TF 2015 weights)",
}


def compute_stats(
    extractor: Extractor, images, labels=None, keep: int = KEEP
) -> tuple[FeatureStats, np.ndarray | None, np.ndarray | None]:
    """Streaming statistics of ``images`` (array or iterable of batches), predicted classes and
    class probabilities (None where the extractor has none)."""
    st = FeatureStats(dim=extractor.dim, keep=keep)
    preds: list[np.ndarray] = []
    probs: list[np.ndarray] = []
    offset = 0
    for b in as_batches(images):
        f, p, q = extractor.extract(b)
        lab = None if labels is None else np.asarray(labels)[offset : offset + len(f)]
        st.update(f, lab)
        if p is not None:
            preds.append(p)
        if q is not None:
            probs.append(q)
        offset += len(f)
    if labels is not None and len(labels) != offset:
        raise EvalError(f"{len(labels)} labels given for {offset} images")
    return (
        st,
        np.concatenate(preds) if preds else None,
        np.concatenate(probs) if probs else None,
    )


def inception_score_of(extractor: Extractor, probs: np.ndarray | None, splits: int = IS_SPLITS):
    """The ``is`` entry of a score: {"metric", "mean", "std", "splits"}."""
    if probs is None or not extractor.has_class_probabilities:
        raise EvalError(
            f"the Inception Score needs class probabilities, and extractor "
            f"{extractor.id or extractor.name!r} gives features only; use the dataset classifier "
            "(IS-classifier) or the FID Inception network (IS)"
        )
    mean, std = inception_score(probs, splits)
    return {"metric": extractor.is_metric, "mean": mean, "std": std, "splits": int(splits)}


def class_recalls(
    gen_f: np.ndarray,
    gen_groups: dict[int, np.ndarray],
    real_f: np.ndarray | None,
    real_l: np.ndarray | None,
    num_classes: int,
    k: int = PR_K,
) -> list[float | None] | None:
    """Recall of each class's real images w.r.t. that class's generated images (index = class).

    Measured at equal set sizes and averaged over draws, as the global figure. A class with
    k or fewer real images gets None (not measurable); one with k or fewer generated images gets
    0.0 (no generated manifold to cover its real images: the class was dropped)."""
    if real_f is None or real_l is None or not gen_groups or num_classes <= 0:
        return None
    out: list[float | None] = []
    for c in range(num_classes):
        g = gen_groups.get(c, np.array([], int))
        r = np.flatnonzero(real_l == c)
        if len(r) <= k:
            out.append(None)
            continue
        if len(g) <= k:
            out.append(0.0)
            continue
        out.append(balanced_recall(real_f[r], gen_f[g], k, PR_DRAWS, seed=1 + c))
    return out


@torch.no_grad()
def generate_images(
    G: torch.nn.Module,
    kind: str,
    latent_dim: int,
    n: int,
    seed: int = 0,
    num_classes: int = 0,
    batch: int = 500,
) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """Yield (images [b, C, R, R] float32 numpy, labels or None) for seeds seed .. seed+n-1
    (z and labels by the same rules as export, so numbers line up with its gate)."""
    G.eval()
    conditional = num_classes > 0
    labels = labels_for_seeds(range(seed, seed + n), num_classes) if conditional else None
    for i in range(0, n, batch):
        j = min(n, i + batch)
        z = torch.from_numpy(z_from_seeds(range(seed + i, seed + j), latent_dim))
        if conditional:
            y = torch.from_numpy(labels[i:j])
            img = G(z, y)
        else:
            img = G(z)
        yield img.float().numpy(), (None if labels is None else labels[i:j])


def _class_groups(labels: np.ndarray | None, k: int) -> dict[int, np.ndarray]:
    if labels is None:
        return {}
    return {c: np.flatnonzero(labels == c) for c in range(k)}


def _per_class(
    gen_f: np.ndarray,
    gen_groups: dict[int, np.ndarray],
    ref: RefStats,
    class_names: list[str],
    with_fd: bool,
) -> tuple[dict | None, dict | None]:
    if ref.features is None or ref.labels is None or not gen_groups:
        return None, None
    real_groups = _class_groups(ref.labels, len(class_names))
    fds, div = {}, {}
    for c, name in enumerate(class_names):
        g, r = gen_groups.get(c, np.array([], int)), real_groups.get(c, np.array([], int))
        gf, rf = gen_f[g], ref.features[r]
        if with_fd and len(gf) >= 2 and len(rf) >= 2:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fds[name] = frechet_distance(
                    gf.mean(0), np.cov(gf, rowvar=False), rf.mean(0), np.cov(rf, rowvar=False)
                )
        dg = mean_pairwise_distance(gf[:DIVERSITY_MAX_PER_CLASS])
        dr = mean_pairwise_distance(rf[:DIVERSITY_MAX_PER_CLASS])
        div[name] = {
            "n_generated": int(len(gf)),
            "generated": None if np.isnan(dg) else dg,
            "real": None if np.isnan(dr) else dr,
            "ratio": None if np.isnan(dg) or np.isnan(dr) or dr == 0 else dg / dr,
        }
    ratios = [v["ratio"] for v in div.values() if v["ratio"] is not None]
    diversity = {
        "per_class": div,
        "mean_ratio": float(np.mean(ratios)) if ratios else None,
        "min_ratio": float(np.min(ratios)) if ratios else None,
    }
    intra = None
    if with_fd and fds:
        intra = {
            "per_class": fds,
            "mean": float(np.mean(list(fds.values()))),
            "note": "per-class N is small (biased upward); compare at equal N only",
        }
    return intra, diversity


def score_images(
    images,
    labels=None,
    ref: RefStats | None = None,
    extractor: Extractor | None = None,
    real_features: np.ndarray | None = None,
    real_labels: np.ndarray | None = None,
    seed: int | None = None,
    kid_subsets: int = KID_SUBSETS,
    kid_subset_size: int = KID_SUBSET_SIZE,
    pr_k: int = PR_K,
    keep: int = KEEP,
    require_is: bool = False,
    is_splits: int = IS_SPLITS,
) -> dict[str, Any]:
    """Score generated ``images`` (array [N, C, R, R] in [-1, 1] or an iterable of batches).

    ``labels`` are the requested classes for conditional models (then conditional accuracy and
    intra-class FD are reported). ``ref`` comes from :func:`load_ref`; ``extractor`` defaults to
    the one the reference was made with. ``real_features``/``real_labels`` override the real
    samples used for KID and precision/recall (default: those stored in the reference).
    The Inception Score (``is``) is computed whenever the extractor has class probabilities;
    ``require_is`` makes its absence an error. Identical inputs give an identical dict.
    """
    if ref is None:
        raise EvalError("score_images needs reference statistics (ref=load_ref(path))")
    if extractor is None:
        extractor = extractor_for_ref(ref)
    check_compatible(extractor.describe(), ref.extractor)
    if require_is and not extractor.has_class_probabilities:
        inception_score_of(extractor, None)  # raises: fail before any work
    if labels is not None:
        labels = np.asarray(labels, dtype=np.int64)
    st, preds, probs = compute_stats(extractor, images, labels, keep=keep)
    return _score(
        st,
        preds,
        probs,
        labels,
        ref,
        extractor,
        seed,
        real_features,
        real_labels,
        kid_subsets,
        kid_subset_size,
        pr_k,
        is_splits,
    )


def score_features(
    features: np.ndarray,
    labels=None,
    ref: RefStats | None = None,
    extractor: Extractor | None = None,
    preds: np.ndarray | None = None,
    probs: np.ndarray | None = None,
    seed: int | None = None,
    kid_subsets: int = KID_SUBSETS,
    kid_subset_size: int = KID_SUBSET_SIZE,
    pr_k: int = PR_K,
    keep: int = KEEP,
    is_splits: int = IS_SPLITS,
    real_features: np.ndarray | None = None,
    real_labels: np.ndarray | None = None,
) -> dict[str, Any]:
    """:func:`score_images` on features already extracted with ``extractor`` (from its
    :meth:`~training.eval.features.Extractor.extract`): one extraction can serve several
    selections of the same images, as the gate's filters are, or several figures of them, as
    the online evaluation's FD at two sample sizes."""
    if ref is None:
        raise EvalError("score_features needs reference statistics (ref=load_ref(path))")
    if extractor is None:
        raise EvalError("score_features needs the extractor the features came from")
    check_compatible(extractor.describe(), ref.extractor)
    features = np.asarray(features, dtype=np.float32)
    if labels is not None:
        labels = np.asarray(labels, dtype=np.int64)
        if len(labels) != len(features):
            raise EvalError(f"{len(labels)} labels given for {len(features)} feature rows")
    st = FeatureStats(dim=extractor.dim, keep=keep)
    st.update(features, labels)
    return _score(
        st,
        preds,
        probs,
        labels,
        ref,
        extractor,
        seed,
        real_features,
        real_labels,
        kid_subsets,
        kid_subset_size,
        pr_k,
        is_splits,
    )


def _score(
    st: FeatureStats,
    preds: np.ndarray | None,
    probs: np.ndarray | None,
    labels: np.ndarray | None,
    ref: RefStats,
    extractor: Extractor,
    seed: int | None,
    real_features: np.ndarray | None,
    real_labels: np.ndarray | None,
    kid_subsets: int,
    kid_subset_size: int,
    pr_k: int,
    is_splits: int,
) -> dict[str, Any]:
    caught: list[str] = []
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        if st.n < 2:
            raise EvalError(f"need at least 2 images to score, got {st.n}")
        warn_if_singular(st.n, st.dim, "generated sample")
        fd = frechet_distance(st.mu, st.sigma, ref.mu, ref.sigma)
        caught = [str(x.message) for x in w]
    metric = extractor.metric
    out: dict[str, Any] = {"metric": metric, "fd": fd}
    out["fd_classifier" if metric == "FD-classifier" else "fid"] = fd
    out["n"] = int(st.n)
    out["seed"] = seed
    gen_f = st.features
    real_f = real_features if real_features is not None else ref.features
    real_l = real_labels if real_features is not None else ref.labels
    if real_f is not None and len(real_f) > pr_k and len(gen_f) > pr_k:
        km, ks = kid(gen_f, real_f, kid_subsets, kid_subset_size, seed=0)
        m = min(len(gen_f), len(real_f))
        p, r, draws = balanced_precision_recall(real_f, gen_f, pr_k, PR_DRAWS)
        out.update(
            kid_mean=km,
            kid_std=ks,
            kid_subset_size=int(min(kid_subset_size, len(gen_f), len(real_f))),
            kid_subsets=kid_subsets,
            precision=p,
            recall=r,
            pr_k=pr_k,
            pr_n=int(m),
            pr_draws=draws,
        )
    else:
        out.update(kid_mean=None, kid_std=None, precision=None, recall=None)
        caught.append("reference has no stored features: KID and precision/recall skipped")
    class_names = list(ref.class_names or extractor.class_names)
    kept_labels = st.labels
    cond = labels is not None
    if cond and preds is not None:
        out["cond_accuracy"] = float((preds == labels).mean())
    else:
        out["cond_accuracy"] = None
    if preds is not None and class_names:
        counts = np.bincount(preds, minlength=len(class_names))
        out["predicted_class_fraction"] = {
            name: float(c / len(preds)) for name, c in zip(class_names, counts)
        }
    # Group generated samples by requested class (conditional) or by predicted class.
    group_labels = kept_labels if cond else (None if preds is None else preds[: len(gen_f)])
    sub_ref = ref
    if real_features is not None:
        sub_ref = RefStats(ref.mu, ref.sigma, ref.n, ref.extractor, features=real_f, labels=real_l)
    gen_groups = _class_groups(group_labels, len(class_names))
    intra, diversity = _per_class(gen_f, gen_groups, sub_ref, class_names, with_fd=cond)
    out["intra_class_fd"] = intra
    per_class_recall = class_recalls(gen_f, gen_groups, real_f, real_l, len(class_names), pr_k)
    out["per_class_recall"] = per_class_recall
    known = [r for r in per_class_recall or [] if r is not None]
    out["min_class_recall"] = min(known) if known else None
    # Fewer images than splits (tiny N): one image per split rather than an error.
    out["is"] = (
        None if probs is None else inception_score_of(extractor, probs, min(is_splits, len(probs)))
    )
    if diversity is not None:
        diversity["grouped_by"] = "requested class" if cond else "predicted class"
    out["diversity"] = diversity
    out["extractor"] = extractor.describe()
    out["reference"] = {
        "id": ref.id,
        "path": ref.path,
        "dataset": ref.dataset,
        "split": ref.split,
        "resolution": ref.resolution,
        "n": ref.n,
    }
    out["note"] = METRIC_NOTES.get(metric, "")
    out["warnings"] = caught
    return out


def extractor_for_ref(ref: RefStats, **kwargs) -> Extractor:
    """The extractor a reference was made with (its sha256 is checked by the caller)."""
    name = ref.extractor.get("name") or str(ref.extractor["id"]).split(":")[0]
    if name == "classifier":
        kwargs.setdefault("dataset", ref.dataset)
    return get_extractor(name, **kwargs)


def score_generator(
    G: torch.nn.Module,
    model_cfg,
    ref: RefStats,
    n: int,
    seed: int = 0,
    extractor: Extractor | None = None,
    dataset: str | None = None,
    batch: int = 500,
    **kwargs,
) -> dict[str, Any]:
    """Generate ``n`` images from seeds seed .. seed+n-1 with a torch generator and score them."""
    if n < 2:
        raise EvalError(f"-n must be at least 2, got {n}")
    check_same_data(ref, dataset, model_cfg.resolution)
    if extractor is None:
        extractor = extractor_for_ref(ref)
    num_classes = model_cfg.num_classes if model_cfg.conditional else 0
    labels = labels_for_seeds(range(seed, seed + n), num_classes) if num_classes else None
    images = (
        img
        for img, _ in generate_images(
            G, model_cfg.kind, model_cfg.latent_dim, n, seed, num_classes, batch
        )
    )
    return score_images(images, labels, ref=ref, extractor=extractor, seed=seed, **kwargs)


def dataset_images(
    ds, indices: np.ndarray, batch: int = 500
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (images, labels) batches of ``ds`` at ``indices`` without loading it all at once."""
    if getattr(ds, "_tensors", None) is not None:
        x, y = ds.as_tensors()
        for i in range(0, len(indices), batch):
            idx = torch.from_numpy(indices[i : i + batch])
            yield x[idx].numpy(), y[idx].numpy()
        return
    for i in range(0, len(indices), batch):
        items = [ds[int(j)] for j in indices[i : i + batch]]
        yield (
            torch.stack([a for a, _ in items]).numpy(),
            np.array([b for _, b in items], dtype=np.int64),
        )


def subset_indices(size: int, n: int | None, seed: int = 0, what: str = "split") -> np.ndarray:
    """All indices (n None) or a seeded subset of ``n`` of them, in order."""
    if n is None:
        return np.arange(size)
    if n < 2:
        raise EvalError(f"N must be at least 2, got {n}")
    if n > size:
        raise EvalError(f"N = {n} is larger than the {what} ({size} images); use -n {size} or less")
    rng = np.random.Generator(np.random.PCG64(seed))
    return np.sort(rng.choice(size, n, replace=False))


def real_floor(extractor: Extractor, ref, n: int, data_root: str | None = None) -> dict[str, Any]:
    """FD of up to ``n`` real images of the split the reference was not made from (train for a
    held-out reference) against it: the best a generator could score at this N. The gate's floor
    and the online evaluation's, so the two read the same number."""
    from training.datasets import load_dataset

    split = "heldout" if ref.split == "train" else "train"
    ds = load_dataset(ref.dataset, ref.resolution, split, data_root=data_root)
    idx = subset_indices(len(ds), min(n, len(ds)), seed=0, what=f"{split} split")
    # Only the distance is needed (not KID or precision/recall): 1/3 of a full score's cost.
    st, _, _ = compute_stats(extractor, (x for x, _ in dataset_images(ds, idx)), keep=0)
    return {"fd": frechet_distance(st.mu, st.sigma, ref.mu, ref.sigma), "n": st.n, "split": split}


def reference_stats(
    extractor: Extractor,
    dataset: str,
    resolution: int,
    split: str,
    n: int | None = None,
    seed: int = 0,
    data_root: str | None = None,
    keep: int = KEEP,
) -> RefStats:
    """Statistics of real images of ``dataset``/``split`` (all, or a seeded subset of ``n``)."""
    from training.datasets import load_dataset

    ds = load_dataset(dataset, resolution, split, data_root=data_root)
    idx = subset_indices(len(ds), n, seed, what=f"{dataset} {split} split")
    st = FeatureStats(dim=extractor.dim, keep=keep)
    for x, y in dataset_images(ds, idx):
        st.update(extractor.features(x), y if ds.num_classes else None)
    return RefStats.from_stats(
        st,
        extractor,
        dataset=dataset,
        resolution=resolution,
        split=split,
        class_names=ds.class_names,
    )
