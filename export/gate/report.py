"""The gate's readable report: ``gate.md`` and the sample grids."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from export.gate.pool import QUANTISATION, CandidatePool, to_model_range
from gancore import images, sampling

GRID_FILE = "gate_samples.png"

REPORT_FILE = "gate.md"

GRID_COLUMNS = 8


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
