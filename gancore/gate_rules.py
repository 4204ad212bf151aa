"""The gate's rules: what a deployable generator must reach, and the verdict from the scores.

Torch-free and in the core because two layers read them: the gate (export/gate/) applies them, and
training's online evaluation (training/eval/online.py) reports a run's figures against them."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from gancore.errors import ExportError

# Samples the gate scores by default (gan-export --gate -n); the online evaluation estimates FD at it.
DEFAULT_N = 5_000


@dataclass(frozen=True)
class GateRules:
    """What a deployable generator must reach (docs/evaluation-and-gate.md, "Quality filters and the gate").

    The defaults leave a margin for sampling noise below what a model that looks like the data
    reaches (≤ 4× the FD floor, precision and recall ≥ 0.7, accuracy ≥ 0.95, class recall ≥ 0.6),
    and refuse a collapsed one (one image per class, or per seed).
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
