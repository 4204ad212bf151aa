"""The quality gate: generate samples from the *exported ONNX graphs through the bundle loader and
the shared sampling rules* (exactly as the server runs them), quantise them to the 8-bit pixels the
server delivers (``gancore.images.to_uint8``, the PNG encoder's own step), score them with the
evaluation package against reference statistics, and write ``gate.json`` and a readable report
(``gate.md`` + sample grids) — for the raw generator and with each quality filter on, so the
filters' effect is measured, not assumed.

The verdict is the raw generator's and needs every rule of :class:`GateRules`: distance ≤ K × the
real-vs-real floor (or ≤ an absolute ``max_fd``), precision ≥ P, recall ≥ R and, for conditional
models, conditional accuracy ≥ A and the minimum per-class recall ≥ C. Each failing rule is named.

Cost: one pass over the candidate seeds generates each image once, runs D on it once (for the
filters) and extracts its features once; the raw, top-k and DRS figures are selections of that
pool. The filters are scored on N/2 selected images, so that top-k's 2 × N/2 candidates are the raw
N and DRS needs only a few hundred more: the filters add about 10% to the raw cost. (Before: each
variant generated and scored its own images, about 5 N images in all.) The filters do not enter
the verdict.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gancore import bundle as bundle_mod
from gancore import filters, images, sampling
from gancore.errors import ExportError
from training.config import write_json_atomic

DEFAULT_N = 5_000
TOPK_OVERSAMPLE = 2  # top-k keeps the best 1/2 of 2N candidates
DRS_MAX_CANDIDATES = 50  # × N
CHUNK = 500
GRID_FILE = "gate_samples.png"
REPORT_FILE = "gate.md"
GRID_COLUMNS = 8
# KID is reported, not a rule: 20 subsets (not 100) keep its mean and std readable at a fifth of
# its cost, which was half of the scoring time (2.9 of 5.3 s per variant at N = 5,000).
KID_SUBSETS = 20
QUANTISATION = "uint8 pixels as served: gancore.images.to_uint8 (clip(rint((x + 1) * 127.5)))"


@dataclass(frozen=True)
class GateRules:
    """What a deployable generator must reach (the README's "Quality filters and the gate").

    Defaults, from the measurements in the README: today's demo cGAN (15× the floor, recall 0.16)
    and StyleGAN-lite (37×, precision 0.50) fail them; the bench goals (≤ 4×, P and R ≥ 0.7,
    accuracy ≥ 0.95, class recall ≥ 0.6) pass them with a margin for sampling noise.
    """

    max_fd_ratio: float | None = 6.0
    max_fd: float | None = None
    min_precision: float = 0.6
    min_recall: float = 0.6
    min_cond_accuracy: float = 0.9
    min_class_recall: float = 0.5

    @classmethod
    def make(
        cls,
        max_fd: float | None = None,
        max_fd_ratio: float | None = None,
        min_precision: float | None = None,
        min_recall: float | None = None,
        min_cond_accuracy: float | None = None,
        min_class_recall: float | None = None,
    ) -> GateRules:
        """Rules from optional overrides (None = default); checks every value's range."""
        if max_fd is not None and max_fd_ratio is not None:
            raise ExportError("give at most one distance threshold: --max-fd X or --max-fd-ratio R")
        d = cls()
        rules = cls(
            max_fd_ratio=None if max_fd is not None else (max_fd_ratio or d.max_fd_ratio),
            max_fd=max_fd,
            min_precision=d.min_precision if min_precision is None else min_precision,
            min_recall=d.min_recall if min_recall is None else min_recall,
            min_cond_accuracy=d.min_cond_accuracy
            if min_cond_accuracy is None
            else min_cond_accuracy,
            min_class_recall=d.min_class_recall if min_class_recall is None else min_class_recall,
        )
        if max_fd_ratio is not None:
            _check_positive("--max-fd-ratio", max_fd_ratio)
        rules.check()
        return rules

    def check(self) -> None:
        if (self.max_fd is None) == (self.max_fd_ratio is None):
            raise ExportError("the gate needs exactly one distance rule: max_fd or max_fd_ratio")
        if self.max_fd is not None:
            _check_positive("--max-fd", self.max_fd)
        else:
            _check_positive("--max-fd-ratio", self.max_fd_ratio)
        for name in ("min_precision", "min_recall", "min_cond_accuracy", "min_class_recall"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not 0.0 <= v <= 1.0:
                flag = "--" + name.replace("_", "-")
                raise ExportError(f"{flag} must be a number in [0, 1], got {v!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_positive(flag: str, v: Any) -> None:
    ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v > 0
    if not ok:
        raise ExportError(f"{flag} must be a positive number, got {v!r}")


def evaluate_rules(
    rules: GateRules, res: dict[str, Any], conditional: bool, floor_fd: float | None
) -> list[dict[str, Any]]:
    """One entry per rule: {"rule", "value", "op", "threshold", "passed", "text"}."""
    if rules.max_fd is not None:
        fd_rule = ("fd", res.get("fd"), "<=", float(rules.max_fd), f"max_fd {rules.max_fd}")
    else:
        thr = float(rules.max_fd_ratio) * float(floor_fd)
        fd_rule = (
            "fd",
            res.get("fd"),
            "<=",
            thr,
            f"{rules.max_fd_ratio} x real-vs-real floor {floor_fd:.4g}",
        )
    table = [
        fd_rule,
        ("precision", res.get("precision"), ">=", rules.min_precision, None),
        ("recall", res.get("recall"), ">=", rules.min_recall, None),
    ]
    if conditional:
        table += [
            ("cond_accuracy", res.get("cond_accuracy"), ">=", rules.min_cond_accuracy, None),
            ("min_class_recall", res.get("min_class_recall"), ">=", rules.min_class_recall, None),
        ]
    out = []
    for name, value, op, thr, why in table:
        if value is None:
            # A ">= 0" rule asks for nothing: it is how a reference without stored features
            # (imported mu and sigma) gates on the distance alone.
            passed = op == ">=" and thr == 0
            text = f"{name} not measured (the reference has no stored features?)"
            text += "; rule off (0)" if passed else ""
        else:
            passed = value <= thr if op == "<=" else value >= thr
            text = f"{name} {value:.4g} {op if passed else _negate(op)} {thr:.4g}"
            if why:
                text += f" ({why})"
        out.append(
            {"rule": name, "value": value, "op": op, "threshold": thr, "passed": bool(passed)}
            | {"text": text}
        )
    return out


def _negate(op: str) -> str:
    return ">" if op == "<=" else "<"


def _score_api():
    """The evaluation package's scoring functions (torch-side; imported only for the gate)."""
    try:
        from training.eval import score as S
        from training.eval import stats as ST
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ExportError(f"the gate needs the evaluation package (training.eval): {e}") from None
    return S, ST


def as_delivered(imgs: np.ndarray) -> np.ndarray:
    """Float images -> the 8-bit pixels the server encodes (uint8 [N, C, R, R])."""
    return np.ascontiguousarray(images.to_uint8(imgs).transpose(0, 3, 1, 2))


def to_model_range(u8: np.ndarray) -> np.ndarray:
    """uint8 [N, C, R, R] -> float32 in [-1, 1], as a client decoding the PNG would read it."""
    return u8.astype(np.float32) / np.float32(127.5) - np.float32(1.0)


class CandidatePool:
    """Seeds seed0, seed0+1, ... generated once each: delivered pixels, D logits, features."""

    def __init__(self, b, extractor, seed0: int, bar=None):
        self.b, self.extractor, self.seed0, self.bar = b, extractor, seed0, bar
        self.pixels: list[np.ndarray] = []
        self.logits: list[np.ndarray] = []
        self.feats: list[np.ndarray] = []
        self.preds: list[np.ndarray] = []
        self.probs: list[np.ndarray] = []
        self.size = 0
        self.seconds = {"generate": 0.0, "discriminator": 0.0, "features": 0.0}

    @property
    def seeds(self) -> np.ndarray:
        return np.arange(self.seed0, self.seed0 + self.size)

    def grow_to(self, size: int, with_logits: bool = True) -> None:
        while self.size < size:
            seeds = list(range(self.seed0 + self.size, self.seed0 + self.size + CHUNK))
            lab = sampling.labels_for_seeds(seeds, self.b.num_classes)
            t = time.perf_counter()
            x = sampling.generate(self.b, seeds, lab)
            t1 = time.perf_counter()
            # D sees the float images, as the server's filter does before encoding.
            self.logits.append(self.b.discriminator(x, lab) if with_logits else np.zeros(0))
            t2 = time.perf_counter()
            u8 = as_delivered(x)
            f, p, q = self.extractor.extract(to_model_range(u8))
            t3 = time.perf_counter()
            self.seconds["generate"] += t1 - t
            self.seconds["discriminator"] += t2 - t1
            self.seconds["features"] += t3 - t2
            self.pixels.append(u8)
            self.feats.append(f)
            self.preds.append(p)
            self.probs.append(q)
            self.size += len(seeds)
            if self.bar is not None:
                self.bar.update(len(seeds))

    def all(self, parts: list) -> np.ndarray | None:
        return None if parts[0] is None else np.concatenate(parts)

    def select(self, idx: np.ndarray) -> dict[str, Any]:
        """Pool rows ``idx`` (positions, seed = seed0 + idx): everything the score needs."""
        preds, probs = self.all(self.preds), self.all(self.probs)
        return {
            "features": np.concatenate(self.feats)[idx],
            "preds": None if preds is None else preds[idx],
            "probs": None if probs is None else probs[idx],
            "seeds": (self.seed0 + idx).tolist(),
        }

    def all_logits(self) -> np.ndarray:
        return np.concatenate(self.logits)


def topk_pick(pool: CandidatePool, n: int) -> tuple[np.ndarray, dict[str, Any]]:
    """The best n of the first 2n candidates by D's logit (``filters.top_k``), in seed order."""
    m = TOPK_OVERSAMPLE * n
    pool.grow_to(m)
    idx = np.sort(filters.top_k(pool.all_logits()[:m], n))
    return idx, {"candidates": m, "kept_fraction": 1 / TOPK_OVERSAMPLE}


def drs_pick(pool: CandidatePool, n: int, cal: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
    """The first n candidates DRS accepts (``filters.drs_accept``: the server's rule per seed)."""
    while True:
        acc = np.flatnonzero(filters.drs_accept(pool.all_logits(), pool.seeds, cal))
        if len(acc) >= n:
            last = int(acc[n - 1]) + 1
            return acc[:n], {"candidates": last, "acceptance_rate": n / last}
        if pool.size >= DRS_MAX_CANDIDATES * n:
            raise ExportError(
                f"DRS accepted only {len(acc)} of {pool.size} candidates; calibration is off"
            )
        # Grow by the expected shortfall (at least one chunk).
        rate = max(len(acc) / pool.size, 1e-3)
        pool.grow_to(pool.size + max(CHUNK, int((n - len(acc)) / rate * 1.1)))


def _summary(res: dict[str, Any], rules: list[dict[str, Any]]) -> dict[str, Any]:
    keys = (
        "fd",
        "kid_mean",
        "kid_std",
        "precision",
        "recall",
        "cond_accuracy",
        "min_class_recall",
        "per_class_recall",
        "is",
        "n",
    )
    out = {k: res.get(k) for k in keys}
    out["distance"] = res["fd"]
    out["rules"] = rules
    out["failed_rules"] = [r["rule"] for r in rules if not r["passed"]]
    out["verdict"] = "passed" if not out["failed_rules"] else "failed"
    if res.get("intra_class_fd"):
        out["intra_class_fd_mean"] = res["intra_class_fd"].get("mean")
    if res.get("diversity"):
        out["diversity_mean_ratio"] = res["diversity"].get("mean_ratio")
    return out


def real_floor(S, ref, extractor, n: int, data_root: str | None = None) -> dict[str, Any]:
    """FD of real images of the split the reference was not made from (train for a held-out
    reference) against it: the best a generator could score. ``data_root``: where torchvision
    datasets live (as ``gan-train --data-root``)."""
    from training.datasets import load_dataset
    from training.eval.fid import frechet_distance

    split = "heldout" if ref.split == "train" else "train"
    ds = load_dataset(ref.dataset, ref.resolution, split, data_root=data_root)
    idx = S.subset_indices(len(ds), min(n, len(ds)), seed=0, what=f"{split} split")
    # Only the distance is needed (not KID or precision/recall): 1/3 of a full score's cost.
    st, _, _ = S.compute_stats(extractor, (x for x, _ in S.dataset_images(ds, idx)), keep=0)
    return {"fd": frechet_distance(st.mu, st.sigma, ref.mu, ref.sigma), "n": st.n, "split": split}


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


def _grid(pool: CandidatePool, idx: np.ndarray, num_classes: int) -> np.ndarray:
    """Conditional: one row per class (its first GRID_COLUMNS kept seeds); a generator with a
    latent code: one row per code value; else 8 × 8."""
    b = pool.b
    if num_classes > 0 or b.latent_code:
        seeds = pool.seeds[idx]
        if num_classes > 0:
            groups, k = seeds % num_classes, num_classes
        else:  # the code the generator reads from each seed's z (gancore.sampling's rule)
            z = sampling.z_from_seeds(seeds.tolist(), b.latent_dim)
            groups, k = sampling.latent_codes(z, b.latent_code), b.latent_code
        rows = [idx[groups == c][:GRID_COLUMNS] for c in range(k)]
        width = max(len(r) for r in rows)
        pix = np.concatenate(pool.pixels)
        blank = np.zeros_like(pix[0])
        tiles = []
        for r in rows:
            tiles += [pix[i] for i in r] + [blank] * (width - len(r))
        u8 = np.stack(tiles)
        ncol = width
    else:
        u8 = np.concatenate(pool.pixels)[idx[: GRID_COLUMNS * GRID_COLUMNS]]
        ncol = GRID_COLUMNS
    grid = images.make_grid(to_model_range(u8), nrow=ncol, pad_value=96)  # grey: tiles stand out
    scale = max(1, 96 // pool.b.resolution)  # 32² tiles → 3×: readable in a report
    return np.repeat(np.repeat(grid, scale, axis=0), scale, axis=1)


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) >= 10 else f"{v:.{digits}f}"
    return str(v)


def write_report(path: Path, gate: dict[str, Any], variants: dict[str, dict[str, Any]]) -> None:
    """``gate.md``: verdict, the rules, the figures raw and per filter, the grids."""
    cond = bool(gate.get("class_names"))
    lines = [
        f"# Gate report: {gate['bundle']}",
        "",
        f"**Verdict: {gate['verdict'].upper()}**"
        + (f" — failed: {', '.join(gate['failed_rules'])}" if gate["failed_rules"] else ""),
        "",
        f"{gate['metric']} against `{(gate.get('reference') or {}).get('id')}` "
        f"({(gate.get('reference') or {}).get('split')} split), N = {gate['n']} generated "
        f"images (seeds {gate['seeds']}), scored as delivered: {QUANTISATION}.",
        f"The verdict is the raw generator's; the filters' figures show what they change. "
        f"{gate.get('note') or ''}",
        "",
        "## Rules (raw generator)",
        "",
        "| rule | value | needs | result |",
        "|---|---|---|---|",
    ]
    for r in gate["rules"]:
        lines.append(
            f"| {r['rule']} | {_fmt(r['value'], 4)} | {r['op']} {_fmt(r['threshold'], 4)} | "
            f"{'pass' if r['passed'] else '**FAIL**'} |"
        )
    cols = ["fd", "precision", "recall", "kid_mean", "is"]
    if cond:
        cols += ["cond_accuracy", "min_class_recall"]
    lines += [
        "",
        "## Figures raw and with each filter",
        "",
        "| variant | "
        + " | ".join(c if c != "is" else gate["is_metric"] or "IS" for c in cols)
        + " | rules | kept |",
        "|---" * (len(cols) + 3) + "|",
    ]
    for name, v in variants.items():
        vals = [v["is"]["mean"] if c == "is" and v.get("is") else v.get(c) for c in cols]
        kept = v.get("kept_fraction", v.get("acceptance_rate"))
        lines.append(
            f"| {name} | "
            + " | ".join(_fmt(x) for x in vals)
            + f" | {'all pass' if not v['failed_rules'] else 'fail: ' + ', '.join(v['failed_rules'])}"
            + f" | {_fmt(kept) if kept is not None else '1'} |"
        )
    pcr = (variants.get("raw") or {}).get("per_class_recall")
    if pcr:
        names = gate.get("class_names") or [str(i) for i in range(len(pcr))]
        lines += [
            "",
            "Per-class recall (raw; "
            + ("requested class" if cond else "grouped by the classifier's predicted class")
            + "):",
            "",
            "| " + " | ".join(names) + " |",
            "|---" * len(names) + "|",
            "| " + " | ".join(_fmt(x, 2) for x in pcr) + " |",
        ]
    lines += ["", "## Samples", ""]
    if cond:
        lines.append(
            "One row per class (" + ", ".join(gate["class_names"]) + "), the first "
            f"{GRID_COLUMNS} seeds of that class each variant keeps."
        )
    elif gate.get("latent_code"):
        lines.append(
            f"One row per value of the generator's latent code ({gate['latent_code']} values, "
            f"read from z), the first {GRID_COLUMNS} seeds of that value each variant keeps."
        )
    else:
        lines.append(f"The first {GRID_COLUMNS * GRID_COLUMNS} seeds each variant keeps.")
    for name, file in gate["grids"].items():
        lines += ["", f"### {name}", "", f"![{name}]({file})"]
    cost = gate.get("cost_seconds") or {}
    lines += [
        "",
        "## Cost",
        "",
        ", ".join(f"{k} {v:.1f} s" for k, v in cost.items()) + f"; total {gate['seconds']} s.",
        "",
    ]
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("\n".join(lines), encoding="utf-8")
    tmp.replace(path)


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
        floor = real_floor(S, ref, extractor, n, data_root=data_root)
        cost["floor"] = time.perf_counter() - t
    cal = (b.filters or {}).get("drs")
    if with_filters and not cal:
        raise ExportError("the bundle has no DRS calibration; re-export it")

    filter_n = max(2, n // TOPK_OVERSAMPLE) if filter_n is None else int(filter_n)
    if not 2 <= filter_n <= n:
        raise ExportError(f"filter_n must be in [2, N = {n}], got {filter_n}")
    expected = n
    if with_filters:
        rate = float(cal.get("expected_acceptance") or 0.5)
        expected = max(n, TOPK_OVERSAMPLE * filter_n, int(filter_n / max(rate, 1e-3) * 1.1))
    bar = _progress_bar(-(-expected // CHUNK) * CHUNK, progress_bar)
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
