"""Running the gate: check the arguments and the reference, build the candidate pool, score the raw
generator and each filter, write ``gate.json`` and the report."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

import export.gate.pool as P
from export.gate.pool import QUANTISATION, CandidatePool, drs_pick, topk_pick
from export.gate.report import GRID_FILE, REPORT_FILE, _grid, write_report
from gancore import bundle as bundle_mod
from gancore import images, sampling
from gancore.errors import ExportError
from gancore.gate_rules import DEFAULT_N, GateRules, _summary, evaluate_rules
from training.config import write_json_atomic

# KID is reported, not a rule: 20 subsets (not 100) keep its mean and std readable at a fifth of
# its cost, which was half of the scoring time (2.9 of 5.3 s per variant at N = 5,000).
KID_SUBSETS = 20


def _score_api():
    """The evaluation package's scoring functions (torch-side; imported only for the gate)."""
    try:
        from training.eval import score as S
        from training.eval import stats as ST
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ExportError(f"the gate needs the evaluation package (training.eval): {e}") from None
    return S, ST


def preflight(
    ref_path,
    dataset: str | None,
    resolution: int,
    rules: GateRules,
    n: int,
    extractor=None,
    classifier: str | Path | None = None,
    data_root: str | None = None,
):
    """Check the gate's arguments and reference before any work: (score module, ref, extractor)."""
    rules.check()
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ExportError(f"the gate needs N >= 2 samples, got {n!r}")
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
                    "classifier", dataset=ref.dataset, classifier_path=classifier,
                    data_root=data_root,
                )  # fmt: skip
            else:
                extractor = S.extractor_for_ref(ref, data_root=data_root)
        ST.check_compatible(extractor.describe(), ref.extractor)
    except UserError as e:
        raise ExportError(str(e)) from None
    if ref.features is None and (rules.min_precision > 0 or rules.min_recall > 0):
        raise ExportError(
            f"reference {str(ref_path)!r} holds only mu and sigma (no stored features, e.g. "
            "statistics imported with `gan-eval import-stats`), so precision and recall cannot "
            "be measured against it: pass --min-precision 0 --min-recall 0 to gate on the "
            "distance alone, or make the reference with `gan-eval stats`"
        )
    if rules.max_fd is None and not ref.dataset:
        raise ExportError(
            f"reference {str(ref_path)!r} records no dataset, so the real-vs-real floor behind "
            "--max-fd-ratio cannot be measured: pass --max-fd X, or import the statistics with "
            "`gan-eval import-stats ... --dataset D --resolution R`"
        )
    return S, ref, extractor


def _progress_bar(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="img", desc="gate: generate + score", leave=False)


def run_gate(
    bundle_path: str | Path,
    ref_path: str | Path,
    rules: GateRules | None = None,
    n: int = DEFAULT_N,
    seed0: int = 0,
    with_filters: bool = True,
    extractor=None,
    kid_subsets: int = KID_SUBSETS,
    progress=None,
    classifier: str | Path | None = None,
    progress_bar: bool = False,
    filter_n: int | None = None,
    max_fd: float | None = None,
    max_fd_ratio: float | None = None,
    backend: str = "onnx",
    device: str = "auto",
    data_root: str | None = None,
) -> dict[str, Any]:
    """Run the gate on a bundle folder; write the report, its grids and ``gate.json`` (each
    atomically, gate.json last). ``filter_n``: images scored per filter (default N/2).
    ``max_fd`` / ``max_fd_ratio``: shorthand for the default rules with that distance rule.
    ``backend`` / ``device``: the graphs to gate (those the server will run).
    ``data_root``: where the floor's (and a missing classifier's) torchvision dataset lives.
    Returns gate.json's dict."""
    say = progress or (lambda msg: None)
    if max_fd is not None or max_fd_ratio is not None:
        if rules is not None:
            raise ExportError("give either rules= or max_fd / max_fd_ratio, not both")
        rules = GateRules.make(max_fd=max_fd, max_fd_ratio=max_fd_ratio)
    rules = rules or GateRules()
    rules.check()
    t0 = time.perf_counter()
    bundle_path = Path(bundle_path)
    b = bundle_mod.load(bundle_path, backend=backend, device=device, require_gate=False)
    ds = (b.manifest.get("dataset") or {}).get("dataset")
    S, ref, extractor = preflight(
        ref_path, ds, b.resolution, rules, n, extractor, classifier, data_root=data_root
    )
    cost: dict[str, float] = {}
    floor = None
    if rules.max_fd is None:
        say("gate: measuring the real-vs-real floor")
        t = time.perf_counter()
        floor = S.real_floor(extractor, ref, n, data_root=data_root)
        cost["floor"] = time.perf_counter() - t
    cal = (b.filters or {}).get("drs")
    if with_filters and not cal:
        raise ExportError("the bundle has no DRS calibration; re-export it")

    filter_n = max(2, n // P.TOPK_OVERSAMPLE) if filter_n is None else int(filter_n)
    if not 2 <= filter_n <= n:
        raise ExportError(f"filter_n must be in [2, N = {n}], got {filter_n}")
    expected = n
    if with_filters:
        rate = float(cal.get("expected_acceptance") or 0.5)
        expected = max(n, P.TOPK_OVERSAMPLE * filter_n, int(filter_n / max(rate, 1e-3) * 1.1))
    bar = _progress_bar(-(-expected // P.CHUNK) * P.CHUNK, progress_bar)
    pool = CandidatePool(b, extractor, seed0, bar)
    say(
        f"gate: generating and scoring {n} samples (raw"
        + (", top_k, drs)" if with_filters else ")")
    )
    picks: dict[str, tuple[np.ndarray, dict[str, Any]]] = {}
    try:
        pool.grow_to(n, with_logits=with_filters)
        picks["raw"] = (np.arange(n), {})
        if with_filters:
            picks["top_k"] = topk_pick(pool, filter_n)
            picks["drs"] = drs_pick(pool, filter_n, cal)
    finally:
        if bar is not None:
            bar.close()
    cost.update(pool.seconds)
    t = time.perf_counter()
    variants: dict[str, dict[str, Any]] = {}
    conditional = b.num_classes > 0
    for name, (idx, info) in picks.items():
        sel = pool.select(idx)
        labels = sampling.labels_for_seeds(sel["seeds"], b.num_classes)
        try:
            res = S.score_features(
                sel["features"],
                labels,
                ref=ref,
                extractor=extractor,
                preds=sel["preds"],
                probs=sel["probs"],
                seed=seed0,
                kid_subsets=kid_subsets,
            )
        except Exception as e:
            raise ExportError(f"scoring failed: {e}") from None
        checked = evaluate_rules(rules, res, conditional, None if floor is None else floor["fd"])
        variants[name] = _summary(res, checked) | info
        if name == "raw":
            raw_res = res
    cost["scores"] = time.perf_counter() - t

    grids = {}
    for name, (idx, _) in picks.items():
        file = GRID_FILE if name == "raw" else f"gate_samples_{name}.png"
        images.save_png(bundle_path / file, _grid(pool, idx, b.num_classes))
        grids[name] = file
    raw = variants["raw"]
    fd_rule = raw["rules"][0]
    gate = {
        "verdict": raw["verdict"],
        "deployable": raw["verdict"] == "passed",
        "failed_rules": raw["failed_rules"],
        "rules": raw["rules"],
        "thresholds": rules.to_dict(),
        "bundle": b.name,
        "metric": raw_res.get("metric"),
        "distance": raw["distance"],
        "fd": raw["distance"],
        "threshold": fd_rule["threshold"],
        "threshold_rule": fd_rule["text"],
        "max_fd": rules.max_fd,
        "max_fd_ratio": rules.max_fd_ratio,
        "real_floor": floor,
        "fd_ratio": None if floor is None else raw["distance"] / floor["fd"],
        "kid_mean": raw["kid_mean"],
        "kid_std": raw["kid_std"],
        "precision": raw["precision"],
        "recall": raw["recall"],
        "cond_accuracy": raw["cond_accuracy"],
        "per_class_recall": raw["per_class_recall"],
        "min_class_recall": raw["min_class_recall"],
        "is": raw["is"],
        "is_metric": (raw["is"] or {}).get("metric"),
        "class_names": b.class_names if conditional else None,
        "latent_code": b.latent_code or None,
        "n": n,
        "filter_n": filter_n if with_filters else None,
        "kid_subsets": kid_subsets,
        "seeds": f"{seed0}-{seed0 + n - 1}",
        "truncation": 1.0,
        "labels": sampling.LABEL_RULE if conditional else None,
        "quantised": QUANTISATION,
        "filters": {k: v for k, v in variants.items() if k != "raw"},
        "generated_by": f"{b.backend} graphs via gancore.bundle.load + gancore.sampling "
        f"({b.provider})",
        "extractor": raw_res.get("extractor"),
        "extractor_sha256": (raw_res.get("extractor") or {}).get("sha256"),
        "reference": raw_res.get("reference"),
        "reference_sha256": bundle_mod.sha256_file(ref_path),
        "manifest_sha256": b.manifest_sha256,
        "note": raw_res.get("note"),
        "sample_grid": GRID_FILE,
        "grids": grids,
        "report": REPORT_FILE,
        "candidates": pool.size,
        "cost_seconds": {k: round(v, 2) for k, v in cost.items()},
        "seconds": round(time.perf_counter() - t0, 1),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_report(bundle_path / REPORT_FILE, gate, variants)
    write_json_atomic(bundle_path / bundle_mod.GATE, gate)
    return gate
