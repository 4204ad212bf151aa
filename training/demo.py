"""``make demo`` (training part): train the three families on digits and say where to look.

    python -m training.demo --out runs/demo

:func:`train_demo_models` is the reusable piece: later stages of the demo (export, gate, serve)
call it to get run directories, and a second call reuses finished runs instead of retraining.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from training.checkpoint import CONFIG_NAME, list_checkpoints, read_run_config
from training.cli import online_fd
from training.errors import UserError
from training.trainer import TrainConfig, train

# Small enough for a couple of minutes each on a 2-core CPU, big enough to show digits.
DEMO_OPTIONS: dict[str, dict] = {
    "dcgan": {"resolution": 32, "g_width": 32, "d_width": 32, "kimg": 60},
    "cgan": {"resolution": 32, "g_width": 32, "d_width": 32, "kimg": 60},
    "stylegan": {"resolution": 32, "g_width": 16, "d_width": 16, "kimg": 40},
}


def _finished(run_dir: Path) -> bool:
    """True when ``run_dir`` holds a checkpoint at the end of its configured schedule."""
    if not (run_dir / CONFIG_NAME).is_file() or not list_checkpoints(run_dir):
        return False
    config = read_run_config(run_dir)
    cfg = TrainConfig.from_dict(config["train"])
    last = int(list_checkpoints(run_dir)[-1].name.split("-")[1].split(".")[0])
    return last >= cfg.total_steps(config["dataset"]["size"])


def train_demo_models(
    out_dir: str | Path,
    kinds: tuple[str, ...] = ("dcgan", "cgan", "stylegan"),
    seed: int = 0,
    progress: bool | None = None,
) -> dict[str, Path]:
    """Train (or reuse, or finish) one digits run per family under ``out_dir``; returns
    ``{kind: run_dir}``. Runs keep ``checkpoints/best.pt`` by the online FD-classifier."""
    out_dir = Path(out_dir)
    runs: dict[str, Path] = {}
    for kind in kinds:
        run_dir = out_dir / f"{kind}-digits"
        if _finished(run_dir):
            print(f"{kind}: reusing finished run {run_dir}", file=sys.stderr)
        elif list_checkpoints(run_dir):
            print(f"{kind}: resuming {run_dir}", file=sys.stderr)
            train({}, run_dir, resume=True, progress=progress, make_eval_fn=online_fd)
        else:
            print(f"{kind}: training {run_dir}", file=sys.stderr)
            options = {"model": kind, "dataset": "digits", "seed": seed, **DEMO_OPTIONS[kind]}
            train(options, run_dir, progress=progress, make_eval_fn=online_fd)
        runs[kind] = run_dir
    return runs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.demo", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/demo", help="folder for the demo runs")
    a = p.parse_args(argv)
    try:
        runs = train_demo_models(a.out)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("sample grids (latest last):")
    for kind, run_dir in runs.items():
        grids = sorted((run_dir / "samples").glob("grid-*.png"))
        print(f"  {kind:9s} {grids[-1] if grids else run_dir / 'samples'}")
        if kind == "stylegan":
            mixes = sorted((run_dir / "samples").glob("mix-*.png"))
            if mixes:
                print(f"  {'':9s} {mixes[-1]}  (style mixing: coarse styles of the top row)")
        print(f"  {'':9s} {run_dir / 'progress.gif'}  {run_dir / 'loss.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
