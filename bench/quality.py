"""Sample quality of the demo models: the demo recipe against the recipe it replaced.

    python bench/quality.py [--quick] [--recipes demo,previous] [--n 5000] [--out bench/results]

Trains the three digits families with ``training.demo``'s recipe (families side by side, as
``make demo`` does) and, in the same run, with the previous demo recipe (widths 32/32/16,
60/60/40 kimg, no augmentation, concatenated cGAN labels, fp32). Each
final checkpoint (the one ``make demo`` exports) is scored like the gate does: FD-classifier of
N generated images (seeds 0..N-1) against the held-out digits, as a ratio to the real floor
(train split vs held-out), precision / recall (k = 3), classifier IS, and for the cGAN
conditional accuracy and the minimum per-class recall. Prints a markdown table, writes
``quality.json`` and one 4x-upscaled sample grid per family of the demo recipe to ``docs/``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from training import viz  # noqa: E402
from training.checkpoint import load_run  # noqa: E402
from training.config import write_json_atomic  # noqa: E402
from training.demo import DEMO_JOBS, DEMO_OPTIONS, train_demo_models  # noqa: E402
from training.eval.features import get_extractor  # noqa: E402
from training.eval.fid import frechet_distance  # noqa: E402
from training.eval.score import reference_stats, score_generator  # noqa: E402

KINDS = ("dcgan", "cgan", "stylegan")
PREVIOUS_OPTIONS = {
    "dcgan": {"resolution": 32, "g_width": 32, "d_width": 32, "kimg": 60},
    "cgan": {"resolution": 32, "g_width": 32, "d_width": 32, "kimg": 60, "g_cond": "concat"},
    "stylegan": {"resolution": 32, "g_width": 16, "d_width": 16, "kimg": 40},
}
for _opts in PREVIOUS_OPTIONS.values():
    _opts.update(augment="", precision="fp32")
# Both recipes train the same way (families side by side), so their times compare.
RECIPES = {"demo": (DEMO_OPTIONS, DEMO_JOBS), "previous": (PREVIOUS_OPTIONS, DEMO_JOBS)}
GOALS = "goals: FD <= 4x floor, precision >= 0.7, recall >= 0.7; cGAN cond. acc >= 0.95, min class recall >= 0.6"


def real_floor(ref) -> float:
    """FD-classifier of the real train split against the held-out reference (the floor)."""
    train = reference_stats(get_extractor("classifier", dataset="digits"), "digits", 32, "train")
    return float(frechet_distance(train.mu, train.sigma, ref.mu, ref.sigma))


def train_seconds(run_dir: Path) -> float:
    seconds = [
        r["train_seconds"]
        for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
        if "train_seconds" in r
    ]
    return max(seconds) if seconds else float("nan")


def score_run(run_dir: Path, ref, n: int, floor: float) -> dict:
    run = load_run(run_dir, "latest")
    torch.set_num_threads(2)
    s = score_generator(run.G_ema, run.model_cfg, ref, n, dataset="digits")
    inception = s.get("is") or {}
    return {
        "fd": s["fd"],
        "fd_ratio": s["fd"] / floor,
        "precision": s["precision"],
        "recall": s["recall"],
        "is_classifier": inception.get("mean"),
        "cond_accuracy": s.get("cond_accuracy"),
        "min_class_recall": s.get("min_class_recall"),
        "per_class_recall": s.get("per_class_recall"),
        "train_seconds": train_seconds(run_dir),
        "step": run.step,
    }


def save_docs_grid(run_dir: Path, kind: str, path: Path, scale: int = 4) -> None:
    """A sample grid of the exported G_ema (cGAN: one row per class; with a latent code: one
    row per code value), upscaled ``scale``x nearest."""
    from PIL import Image

    run = load_run(run_dir, "auto")  # what gan-export exports
    g = torch.Generator().manual_seed(2026)
    with torch.no_grad():
        if run.model_cfg.conditional:
            k = run.model_cfg.num_classes
            labels = torch.arange(k).repeat_interleave(10)
            images = run.G_ema(
                torch.randn(len(labels), run.model_cfg.latent_dim, generator=g), labels
            )
        elif run.model_cfg.latent_code:  # one row per value of the InfoGAN code
            from training.models.code import with_code

            k = run.model_cfg.latent_code
            z = torch.randn(10 * k, run.model_cfg.latent_dim, generator=g)
            images = run.G_ema(with_code(z, torch.arange(k).repeat_interleave(10), k))
        else:
            images = run.G_ema(torch.randn(80, run.model_cfg.latent_dim, generator=g))
    grid = viz.grid_image(images.float().clamp(-1, 1), 10)
    grid = grid.resize((grid.width * scale, grid.height * scale), Image.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    grid.save(tmp)
    tmp.replace(path)


def write_results(out: Path, results: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "quality.json", results, default=float)


def fmt(v, spec=".2f") -> str:
    return "–" if v is None else format(v, spec)


def table(results: dict) -> str:
    rows = [
        "| recipe | family | FD / floor | precision | recall | IS (classifier) | cond. acc. "
        "| min class recall | train s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for recipe, fams in results["recipes"].items():
        for kind, r in fams["families"].items():
            rows.append(
                f"| {recipe} | {kind} | {r['fd_ratio']:.1f}× | {r['precision']:.2f} | "
                f"{r['recall']:.2f} | {fmt(r['is_classifier'])} | {fmt(r['cond_accuracy'], '.3f')} "
                f"| {fmt(r['min_class_recall'])} | {r['train_seconds']:.0f} |"
            )
        rows.append(f"| {recipe} | all three, wall | | | | | | | {fams['wall_seconds']:.0f} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipes", default="demo,previous")
    p.add_argument("--n", type=int, default=5000)
    p.add_argument("--ref", default=str(REPO / "refs" / "digits-32-heldout.npz"))
    p.add_argument("--runs", help="folder for the runs (default: a temp folder)")
    p.add_argument("--out", default=str(REPO / "bench" / "results"))
    p.add_argument("--docs", default=str(REPO / "docs"))
    p.add_argument("--quick", action="store_true", help="1/20 of each length, N = 1,000, no grids")
    a = p.parse_args(argv)
    if a.quick:
        a.n = min(a.n, 1000)
    recipes = [r.strip() for r in a.recipes.split(",") if r.strip()]
    bad = [r for r in recipes if r not in RECIPES]
    if bad:
        print(f"error: unknown recipe {bad[0]!r}; use {', '.join(RECIPES)}", file=sys.stderr)
        return 2

    from training.eval.score import load_ref

    ref_path = Path(a.ref)
    if not ref_path.is_file():
        from training.eval.cli import main as gan_eval

        ref_path.parent.mkdir(parents=True, exist_ok=True)
        gan_eval(["stats", "--dataset", "digits", "--resolution", "32", "--split", "heldout",
                  "--out", str(ref_path)])  # fmt: skip
    ref = load_ref(ref_path)
    floor = real_floor(ref)
    runs_root = Path(a.runs) if a.runs else Path(tempfile.mkdtemp(prefix="ganforge-quality-"))
    results = {"n": a.n, "floor": floor, "ref": str(ref_path), "recipes": {}}
    for recipe in recipes:
        options, jobs = RECIPES[recipe]
        if a.quick:
            options = {k: {**o, "kimg": o["kimg"] / 20} for k, o in options.items()}
        t0 = time.perf_counter()
        runs = train_demo_models(runs_root / recipe, KINDS, jobs=jobs, options=options)
        wall = time.perf_counter() - t0
        fams = {kind: score_run(run_dir, ref, a.n, floor) for kind, run_dir in runs.items()}
        results["recipes"][recipe] = {
            "options": options,
            "jobs": jobs,
            "wall_seconds": wall,
            "families": fams,
        }
        if recipe == "demo" and not a.quick:
            for kind, run_dir in runs.items():
                save_docs_grid(run_dir, kind, Path(a.docs) / f"samples-{kind}.png")
        print(f"{recipe}: trained in {wall:.0f} s wall", file=sys.stderr)
        write_results(Path(a.out), results)
    print(f"\nFD-classifier, N = {a.n} vs the held-out digits; floor (train vs held-out) "
          f"{floor:.3f}; {GOALS}\n")  # fmt: skip
    print(table(results))
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
