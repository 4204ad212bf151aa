"""The FID gate: generate N samples from the *exported ONNX graphs through the bundle loader and
the shared sampling rules* (exactly as the server runs them), score them with the evaluation
package against reference statistics, and write ``gate.json`` — for the raw generator and with
each quality filter on, so the filters' effect is measured, not assumed.

Pass: distance ≤ ``max_fd`` (absolute) or ≤ ``max_fd_ratio`` × the real-vs-real floor (the FD of
the dataset's train split against the same reference, with the same extractor and N).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from export import bundle as bundle_mod
from export import filters, images, sampling
from export.errors import ExportError
from training.config import write_json_atomic

DEFAULT_N = 10_000
TOPK_OVERSAMPLE = 2  # top-k keeps the best 1/2 of 2N candidates
DRS_MAX_CANDIDATES = 50  # × N
CHUNK = 500
GRID_FILE = "gate_samples.png"


def _score_api():
    """The evaluation package's scoring functions (torch-side; imported only for the gate)."""
    try:
        from training.eval import score as S
        from training.eval import stats as ST
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ExportError(f"the gate needs the evaluation package (training.eval): {e}") from None
    return S, ST


def _stream(b, seeds: list[int]) -> Iterator[np.ndarray]:
    for i in range(0, len(seeds), CHUNK):
        chunk = seeds[i : i + CHUNK]
        yield sampling.generate(b, chunk, sampling.labels_for_seeds(chunk, b.num_classes))


def _logits(b, seeds: list[int]) -> np.ndarray:
    out = []
    for i in range(0, len(seeds), CHUNK):
        chunk = seeds[i : i + CHUNK]
        lab = sampling.labels_for_seeds(chunk, b.num_classes)
        out.append(b.discriminator(sampling.generate(b, chunk, lab), lab))
    return np.concatenate(out) if out else np.zeros(0)


def topk_seeds(b, n: int, seed0: int = 0) -> tuple[list[int], dict[str, Any]]:
    cands = list(range(seed0, seed0 + TOPK_OVERSAMPLE * n))
    logits = _logits(b, cands)
    keep = sorted(cands[i] for i in filters.top_k(logits, n))
    return keep, {"candidates": len(cands), "kept_fraction": 1 / TOPK_OVERSAMPLE}


def drs_seeds(b, n: int, seed0: int = 0) -> tuple[list[int], dict[str, Any]]:
    cal = (b.filters or {}).get("drs")
    if not cal:
        raise ExportError("the bundle has no DRS calibration; re-export it")
    kept: list[int] = []
    s = seed0
    while len(kept) < n:
        if s - seed0 >= DRS_MAX_CANDIDATES * n:
            raise ExportError(
                f"DRS accepted only {len(kept)} of {s - seed0} candidates; calibration is off"
            )
        chunk = list(range(s, s + CHUNK))
        acc = filters.drs_accept(_logits(b, chunk), chunk, cal)
        kept.extend(c for c, a in zip(chunk, acc) if a)
        s += CHUNK
    return kept[:n], {"candidates": s - seed0, "acceptance_rate": len(kept) / (s - seed0)}


def _summary(res: dict[str, Any], threshold: float) -> dict[str, Any]:
    keys = ("fd", "kid_mean", "kid_std", "precision", "recall", "cond_accuracy", "n")
    out = {k: res.get(k) for k in keys}
    out["distance"] = res["fd"]
    out["verdict"] = "passed" if res["fd"] <= threshold else "failed"
    if res.get("intra_class_fd"):
        out["intra_class_fd_mean"] = res["intra_class_fd"].get("mean")
    if res.get("diversity"):
        out["diversity_mean_ratio"] = res["diversity"].get("mean_ratio")
    return out


def real_floor(S, ref, extractor, n: int) -> dict[str, Any]:
    """FD of real train-split images against the reference: the best a generator could score."""
    from training.datasets import load_dataset

    ds = load_dataset(ref.dataset, ref.resolution, "train")
    idx = S.subset_indices(len(ds), min(n, len(ds)), seed=0, what="train split")
    batches = (x for x, _ in S.dataset_images(ds, idx))
    res = S.score_images(batches, None, ref=ref, extractor=extractor, kid_subsets=10)
    return {"fd": res["fd"], "n": res["n"], "split": "train"}


def check_threshold(max_fd: float | None, max_fd_ratio: float | None, n: int) -> None:
    if (max_fd is None) == (max_fd_ratio is None):
        raise ExportError("the gate needs exactly one threshold: --max-fd X or --max-fd-ratio R")
    thr = max_fd if max_fd is not None else max_fd_ratio
    if not (isinstance(thr, int | float) and np.isfinite(thr) and thr > 0):
        raise ExportError(f"gate threshold must be a positive number, got {thr!r}")
    if n < 2:
        raise ExportError(f"the gate needs N >= 2 samples, got {n}")


def preflight(
    ref_path,
    dataset: str | None,
    resolution: int,
    max_fd: float | None,
    max_fd_ratio: float | None,
    n: int,
    extractor=None,
    classifier: str | Path | None = None,
):
    """Check the gate's arguments and reference before any work: (score module, ref, extractor)."""
    check_threshold(max_fd, max_fd_ratio, n)
    if ref_path is None:
        raise ExportError(
            "the gate needs reference statistics: --ref REF.npz (make them with "
            "`gan-eval stats --dataset D --split heldout --out REF.npz`)"
        )
    S, ST = _score_api()
    from training.errors import UserError

    try:
        ref = S.load_ref(ref_path)
        ST.check_same_data(ref, dataset, resolution)
        if extractor is None:
            if classifier is not None:
                extractor = S.get_extractor(
                    "classifier", dataset=ref.dataset, classifier_path=classifier
                )
            else:
                extractor = S.extractor_for_ref(ref)
        ST.check_compatible(extractor.describe(), ref.extractor)
    except UserError as e:
        raise ExportError(str(e)) from None
    return S, ref, extractor


def run_gate(
    bundle_path: str | Path,
    ref_path: str | Path,
    max_fd: float | None = None,
    max_fd_ratio: float | None = None,
    n: int = DEFAULT_N,
    seed0: int = 0,
    with_filters: bool = True,
    extractor=None,
    kid_subsets: int = 100,
    progress=None,
    classifier: str | Path | None = None,
) -> dict[str, Any]:
    """Run the gate on a bundle folder and write ``gate.json`` (atomically). Returns its dict."""
    say = progress or (lambda msg: None)
    t0 = time.perf_counter()
    b = bundle_mod.load(bundle_path, backend="onnx", device="auto", require_gate=False)
    ds = (b.manifest.get("dataset") or {}).get("dataset")
    S, ref, extractor = preflight(
        ref_path, ds, b.resolution, max_fd, max_fd_ratio, n, extractor, classifier
    )
    floor = None
    if max_fd_ratio is not None:
        say("measuring the real-vs-real floor")
        floor = real_floor(S, ref, extractor, n)
        threshold = float(max_fd_ratio) * floor["fd"]
    else:
        threshold = float(max_fd)

    variants: dict[str, dict[str, Any]] = {}
    seeds_raw = list(range(seed0, seed0 + n))
    plan = [("raw", lambda: (seeds_raw, {}))]
    if with_filters:
        plan += [
            ("top_k", lambda: topk_seeds(b, n, seed0)),
            ("drs", lambda: drs_seeds(b, n, seed0)),
        ]
    for name, pick in plan:
        say(f"gate: generating and scoring {n} samples ({name})")
        seeds, info = pick()
        labels = sampling.labels_for_seeds(seeds, b.num_classes)
        try:
            res = S.score_images(
                _stream(b, seeds),
                labels,
                ref=ref,
                extractor=extractor,
                seed=seed0,
                kid_subsets=kid_subsets,
            )
        except Exception as e:
            raise ExportError(f"scoring failed: {e}") from None
        variants[name] = _summary(res, threshold) | info
        if name == "raw":
            raw_res = res
    raw = variants["raw"]
    verdict = raw["verdict"]
    grid_seeds = seeds_raw[:64]
    grid = images.make_grid(
        sampling.generate(b, grid_seeds, sampling.labels_for_seeds(grid_seeds, b.num_classes)),
        nrow=8,
    )
    images.save_png(Path(bundle_path) / GRID_FILE, grid)
    gate = {
        "verdict": verdict,
        "deployable": verdict == "passed",
        "metric": raw_res.get("metric"),
        "distance": raw["distance"],
        "threshold": threshold,
        "threshold_rule": (
            f"fd <= max_fd = {max_fd}"
            if max_fd is not None
            else f"fd <= max_fd_ratio {max_fd_ratio} x real-vs-real floor {floor['fd']:.6g}"
        ),
        "max_fd": max_fd,
        "max_fd_ratio": max_fd_ratio,
        "real_floor": floor,
        "kid_mean": raw["kid_mean"],
        "kid_std": raw["kid_std"],
        "precision": raw["precision"],
        "recall": raw["recall"],
        "cond_accuracy": raw["cond_accuracy"],
        "n": n,
        "kid_subsets": kid_subsets,
        "seeds": f"{seed0}-{seed0 + n - 1}",
        "truncation": 1.0,
        "labels": sampling.LABEL_RULE if b.num_classes else None,
        "filters": {k: v for k, v in variants.items() if k != "raw"},
        "generated_by": f"{b.backend} graphs via export.bundle.load + export.sampling "
        f"({b.provider})",
        "extractor": raw_res.get("extractor"),
        "extractor_sha256": (raw_res.get("extractor") or {}).get("sha256"),
        "reference": raw_res.get("reference"),
        "reference_sha256": bundle_mod.sha256_file(ref_path),
        "manifest_sha256": b.manifest_sha256,
        "note": raw_res.get("note"),
        "sample_grid": GRID_FILE,
        "seconds": round(time.perf_counter() - t0, 1),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_json_atomic(Path(bundle_path) / bundle_mod.GATE, gate)
    return gate
