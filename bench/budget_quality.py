"""What ``gan-train --minutes T`` makes of a dataset, with the commands a user would run.

    python bench/real_data.py animals --out data/animals
    python bench/budget_quality.py --dataset folder:data/animals --minutes 10 \\
        [--families dcgan,cgan,stylegan] [--jobs 1] [--out bench/results/budget] [-- EXTRA FLAGS]

For each family: ``gan-train --model M --dataset D --resolution 32 --minutes T --out RUN``
(plus EXTRA FLAGS, to compare a variant), ``gan-eval stats`` of the held-out split once, and
``gan-export RUN --out BUNDLE --gate --ref REF``. Prints a markdown table of the gate's figures
(FD/floor, precision, recall, and for the cGAN accuracy and the weakest class), with the run's
measured speed and length, and writes ``budget.json`` beside the runs. ``--jobs 2`` trains two
families at once on one torch thread each (each then has half the machine: a figure for the
machine, not for the recipe). A refused gate is a figure here, not an error.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

BIN = Path(sys.executable).parent


def run(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> int:
    with log.open("a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        return subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env).returncode


def family(kind: str, args: argparse.Namespace, ref: Path, threads: int) -> dict:
    out = args.out / kind
    out.mkdir(parents=True, exist_ok=True)
    log = out / "log.txt"
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    train = [str(BIN / "gan-train"), "--model", kind, "--dataset", args.dataset, "--resolution",
             str(args.resolution), "--minutes", str(args.minutes), "--out", str(out / "run")]  # fmt: skip
    t0 = time.monotonic()
    rc = run(train + args.extra, log, env)
    wall = time.monotonic() - t0
    if rc != 0:
        return {"family": kind, "error": f"gan-train exit {rc} (see {log})"}
    export = [str(BIN / "gan-export"), str(out / "run"), "--out", str(out / "bundle"), "--gate",
              "--ref", str(ref)]  # fmt: skip
    rc = run(export, log, env)
    gate_file = out / "bundle" / "gate.json"
    if not gate_file.is_file():
        return {"family": kind, "error": f"gan-export exit {rc} (see {log})"}
    gate = json.loads(gate_file.read_text())
    config = json.loads((out / "run" / "config.json").read_text())
    plan = config.get("plan", {})
    return {
        "family": kind,
        "train_wall_s": round(wall, 1),
        "kimg": (plan.get("finished") or {}).get("kimg"),
        "img_per_s": (plan.get("measured") or {}).get("img_per_s"),
        "verdict": gate["verdict"],
        "failed_rules": gate["failed_rules"],
        "fd_ratio": gate["fd_ratio"],
        "precision": gate["precision"],
        "recall": gate["recall"],
        "cond_accuracy": gate["cond_accuracy"],
        "min_class_recall": gate["min_class_recall"],
        "grid": str(out / "bundle" / "gate_samples.png"),
    }


def table(rows: list[dict]) -> str:
    lines = ["| family | kimg | img/s | FD / floor | precision | recall | accuracy | weakest "
             "class | gate |", "|---|---:|---:|---:|---:|---:|---:|---:|---|"]  # fmt: skip

    def f(v, fmt):
        return "–" if v is None else format(v, fmt)

    for r in rows:
        if "error" in r:
            lines.append(f"| {r['family']} | {r['error']} |")
            continue
        lines.append(
            f"| {r['family']} | {f(r['kimg'], '.0f')} | {f(r['img_per_s'], '.0f')} | "
            f"{f(r['fd_ratio'], '.1f')}× | {r['precision']:.2f} | {r['recall']:.2f} | "
            f"{f(r['cond_accuracy'], '.3f')} | {f(r['min_class_recall'], '.2f')} | "
            f"{r['verdict']}{' (' + ', '.join(r['failed_rules']) + ')' if r['failed_rules'] else ''} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", required=True)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--families", default="dcgan,cgan,stylegan")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--threads", type=int, help="torch threads per training (default: cores / jobs)")
    p.add_argument("--out", type=Path, default=Path("bench/results/budget"))
    args = p.parse_args(argv)
    args.extra = extra
    args.out.mkdir(parents=True, exist_ok=True)
    ref = args.out.parent / f"ref-{args.dataset.replace('/', '_').replace(':', '_')}.npz"
    if not ref.is_file():
        stats = [str(BIN / "gan-eval"), "stats", "--dataset", args.dataset, "--resolution",
                 str(args.resolution), "--split", "heldout", "--out", str(ref)]  # fmt: skip
        if run(stats, args.out / "stats-log.txt") != 0:
            print(f"error: gan-eval stats failed (see {args.out / 'stats-log.txt'})")
            return 1
    kinds = args.families.split(",")
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(lambda k: family(k, args, ref, threads), kinds))
    meta = {"dataset": args.dataset, "minutes": args.minutes, "jobs": args.jobs,
            "extra": extra, "host_cpus": os.cpu_count(), "rows": rows}  # fmt: skip
    (args.out / "budget.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"{args.dataset}, --minutes {args.minutes:g}, {args.jobs} at a time, {extra or ''}")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
