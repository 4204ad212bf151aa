"""``make demo`` (training part): train the three families on digits and say where to look.

    python -m training.demo --out runs/demo

:func:`train_demo_models` is the reusable piece: later stages of the demo (export, gate, serve)
call it to get run directories, and a second call reuses finished runs instead of retraining.
The families train side by side in separate processes of one torch thread each (``jobs``):
small convolutions use two cores better as two one-thread processes than as one two-thread one.
Each worker thread keeps its process for the next family it trains.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from training.checkpoint import CONFIG_NAME, list_checkpoints, read_run_config
from training.cli import online_fd
from training.errors import UserError
from training.trainer import TrainConfig, train

# The demo: each family with the default recipe (training/recipe.py, the same rules as any
# dataset) and a wall-time budget. Two workers of one thread each: StyleGAN-lite, ~5.6x a DCGAN's
# cost per image, alone in one; the cGAN then the DCGAN in the other, so that both end together.
DEMO_MINUTES = {"stylegan": 6.0, "cgan": 2.5, "dcgan": 3.5}
DEMO_OPTIONS: dict[str, dict[str, Any]] = {
    kind: {"resolution": 32, "minutes": minutes} for kind, minutes in DEMO_MINUTES.items()
}
# Longest first, so that two workers finish close together.
TRAIN_ORDER = ("stylegan", "cgan", "dcgan")
DEMO_JOBS = 2


def _finished(run_dir: Path) -> bool:
    """True when ``run_dir`` holds a checkpoint at the end of its configured schedule."""
    if not (run_dir / CONFIG_NAME).is_file() or not list_checkpoints(run_dir):
        return False
    config = read_run_config(run_dir)
    cfg = TrainConfig.from_dict(config["train"])
    last = int(list_checkpoints(run_dir)[-1].name.split("-")[1].split(".")[0])
    return last >= cfg.total_steps(config["dataset"]["size"])


def _recipe_changes(run_dir: Path, kind: str, options: dict[str, Any], seed: int) -> list[str]:
    """How the run in ``run_dir`` differs from what ``options`` and today's rules would train
    (``key saved -> wanted``): a ganforge whose rules changed does not reuse an older run."""
    from training.recipe import SETTINGS
    from training.train_config import RESUMABLE_OVERRIDES, resolve_options

    config = read_run_config(run_dir)
    saved = {**config.get("model", {}), **config.get("train", {})}
    full = {"model": kind, "dataset": "digits", "seed": seed, **options}
    cfg, model_kwargs = resolve_options(full)
    now = {**cfg.to_dict(), **model_kwargs}
    # What the options name and what the rules choose; not the lengths and intervals a budget
    # plans (they do not change what is trained).
    keys = (set(full) | set(SETTINGS)) - (RESUMABLE_OVERRIDES - {"minutes"})
    wanted = {k: full[k] if k in full else now[k] for k in sorted(keys) if k in full or k in now}
    return [f"{k} {saved.get(k)!r} -> {v!r}" for k, v in wanted.items() if saved.get(k) != v]


def train_one(
    kind: str, run_dir: Path, options: dict[str, Any], seed: int = 0, progress: bool | None = None
) -> Path:
    """Train (or reuse, or finish) one digits run of ``kind`` in this process. A run folder
    trained with another recipe (an older ganforge's demo) is moved aside, not reused."""
    run_dir = Path(run_dir)
    if (run_dir / CONFIG_NAME).is_file():
        changes = _recipe_changes(run_dir, kind, options, seed)
        if changes:
            aside = run_dir.with_name(f"{run_dir.name}.old-{time.strftime('%Y%m%dT%H%M%S')}")
            run_dir.rename(aside)
            print(f"{kind}: {run_dir} was trained with another recipe ({'; '.join(changes)}); "
                  f"moved it to {aside}", file=sys.stderr)  # fmt: skip
    if _finished(run_dir):
        print(f"{kind}: reusing finished run {run_dir}", file=sys.stderr)
    elif list_checkpoints(run_dir):
        print(f"{kind}: resuming {run_dir}", file=sys.stderr)
        train({}, run_dir, resume=True, progress=progress, make_eval_fn=online_fd)
    else:
        print(f"{kind}: training {run_dir}", file=sys.stderr)
        full = {"model": kind, "dataset": "digits", "seed": seed, **options}
        train(full, run_dir, progress=progress, make_eval_fn=online_fd)
    return run_dir


def _prepare_classifier() -> None:
    """Train the digits classifier once, before workers that all need it start."""
    from training.eval.features import get_extractor

    get_extractor("classifier", dataset="digits")


class _WorkerProcess:
    """A training process that trains families one after another, as its owner thread asks
    (``python -m training.demo --worker``: one JSON job per line on stdin, one reply line per job
    on stdout). The second family on a worker skips the interpreter's start and torch's imports:
    in a fresh-clone demo the DCGAN's process took 27 s to start beside two busy ones."""

    def __init__(self, threads: int):
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        cmd = [sys.executable, "-m", "training.demo", "--worker", "--threads", str(threads)]
        self.proc = subprocess.Popen(
            cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def train(self, kind: str, run_dir: Path, options: dict, seed: int) -> None:
        job = {"kind": kind, "run_dir": str(run_dir), "options": options, "seed": seed}
        try:
            self.proc.stdin.write(json.dumps(job) + "\n")
            self.proc.stdin.flush()
            reply = self.proc.stdout.readline().strip()
        except BrokenPipeError:
            reply = ""
        if reply == "ok":
            return
        if reply:  # the worker said why on stderr and is still alive
            raise UserError(f"training the demo {kind} in {str(run_dir)!r} failed ({reply})")
        rc = self.proc.wait()
        raise UserError(f"training the demo {kind} in {str(run_dir)!r} failed (exit status {rc})")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.stdin.close()
        self.proc.wait()


_workers = threading.local()


def _train_in_subprocess(kind: str, run_dir: Path, options: dict, seed: int, threads: int) -> None:
    """Train one family in this thread's worker process (started on first use; a worker that
    died is replaced at the next family). :func:`_close_workers` ends them."""
    worker = getattr(_workers, "process", None)
    if worker is None or worker.proc.poll() is not None:
        worker = _workers.process = _WorkerProcess(threads)
        with _all_workers_lock:
            _all_workers.append(worker)
    worker.train(kind, run_dir, options, seed)


_all_workers: list[_WorkerProcess] = []
_all_workers_lock = threading.Lock()


def _close_workers() -> None:
    with _all_workers_lock:
        workers, _all_workers[:] = list(_all_workers), []
    for w in workers:
        w.close()


def _worker_main() -> int:
    """``--worker``: train the jobs read from stdin, one per line, replying ``ok`` or
    ``error: ...`` on the real stdout. Anything else written to stdout goes to stderr."""
    reply = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    for line in sys.stdin:
        job = json.loads(line)
        try:
            train_one(job["kind"], Path(job["run_dir"]), job["options"], job["seed"], False)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            reply.write(f"error: {e}\n")
        else:
            reply.write("ok\n")
        reply.flush()
    return 0


def train_demo_models(
    out_dir: str | Path,
    kinds: tuple[str, ...] = ("dcgan", "cgan", "stylegan"),
    seed: int = 0,
    progress: bool | None = None,
    jobs: int = DEMO_JOBS,
    options: dict[str, dict[str, Any]] | None = None,
    after: Callable[[str, Path], Any] | None = None,
) -> dict[str, Path]:
    """Train (or reuse, or finish) one digits run per family under ``out_dir``; returns
    ``{kind: run_dir}`` in the order of ``kinds``. ``jobs`` > 1 trains that many families at
    once, each in its own process with ``cores // jobs`` torch threads. Runs with evaluations
    (not the demo's) keep ``checkpoints/best.pt`` by the online FD-classifier. ``after(kind,
    run_dir)`` runs as soon
    as that family is trained, one at a time on a worker of its own, while the others still
    train (the demo exports and gates each bundle there)."""
    out_dir = Path(out_dir)
    options = DEMO_OPTIONS if options is None else options
    runs = {kind: out_dir / f"{kind}-digits" for kind in kinds}
    todo = [k for k in TRAIN_ORDER if k in runs] + [k for k in kinds if k not in TRAIN_ORDER]
    then = after or (lambda kind, run_dir: None)
    if jobs <= 1 or len(kinds) == 1:
        for kind in todo:
            train_one(kind, runs[kind], options[kind], seed, progress)
            then(kind, runs[kind])
        return runs
    if any(options[k].get("eval_every", 1) for k in kinds):
        _prepare_classifier()
    threads = max(1, (os.cpu_count() or 1) // jobs)
    # ``after`` runs on its own worker, so that a training worker goes straight on to its next
    # family instead of waiting for an export (measured: the demo's last training ended about a
    # minute sooner, and /readyz came at 563 s instead of 647 s). A family whose training failed
    # is not exported; every family that trained is, and the first error is raised after all.
    # ``jobs`` of them may run at once: the last two families end their training within
    # seconds of each other, and their two exports side by side (one thread each) end sooner
    # than one after the other.
    afters = ThreadPoolExecutor(max_workers=jobs)

    def job(kind: str) -> Future:
        _train_in_subprocess(kind, runs[kind], options[kind], seed, threads)
        return afters.submit(then, kind, runs[kind])

    errors: list[BaseException] = []
    try:
        with afters, ThreadPoolExecutor(max_workers=jobs) as pool:
            for trained in [pool.submit(job, k) for k in todo]:
                try:
                    followup = trained.result()
                except Exception as e:  # the other families train and export on regardless
                    errors.append(e)
                    continue
                try:
                    followup.result()
                except Exception as e:
                    errors.append(e)
    finally:
        _close_workers()
    if errors:
        raise errors[0]
    return runs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.demo", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/demo", help="folder for the demo runs")
    p.add_argument("--jobs", type=int, default=DEMO_JOBS, help="families trained at once")
    # Used by train_demo_models' worker processes (_WorkerProcess): jobs on stdin, threads.
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    try:
        if a.worker:
            import torch

            if a.threads:
                torch.set_num_threads(a.threads)
            return _worker_main()
        t0 = time.perf_counter()
        runs = train_demo_models(a.out, jobs=a.jobs)
        print(f"trained in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
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
