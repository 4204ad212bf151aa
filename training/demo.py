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

# The demo recipe (README "Quality" has the measurements behind it). Budget: the three train two
# families at a time on one thread each, in about 6.5 minutes of wall time on these 2 shared
# cores (fresh-clone demo: StyleGAN-lite 387 s of steps in one worker; cGAN 154 s then DCGAN
# 230 s in the other; /readyz at 503 s). StyleGAN-lite costs ~5.6x a DCGAN-32 per image (155
# against 869 img/s there), so it takes one worker alone while the other trains the cGAN then
# the DCGAN. bf16 autocast on CPU: 1.4x (StyleGAN-lite) to 2.4x (DCGAN) the fp32 speed. The
# concatenated-label cGAN collapses to one image per class at this size whatever
# the augmentation or instance noise (recall 0.05-0.09); the mode-seeking term keeps each class
# diverse; class-conditional BatchNorm conditioned too weakly (accuracy 0.3-0.5). cGAN lr 3.5e-4
# at 100 kimg (the recipe; 23% less training than lr 2e-4 at 130 kimg, which the StyleGAN-lite's
# longer training needed): seeds 0 / 1 3.1x / 2.8x, P 0.71 / 0.68, accuracy 0.960 / 0.961,
# weakest class 0.78 / 0.76, against 2.6x / 2.3x, 0.70 / 0.69, 0.976 / 0.970, 0.69 / 0.74 (both
# measured without channels_last). R1 on D's real images (every 16 steps) is
# what first moved the DCGAN: at 60 kimg 4.8x the floor with gamma 0.5 against 10x without
# (gamma 2: 6.0x), and its FD falls steadily instead of swinging between checkpoints; a wider D,
# TTUR, hinge + spectral norm, a longer EMA and top-k G updates did not. Without a latent code,
# scored like the gate, same seed: gamma 0.5 at 100 kimg 3.9x, precision 0.59; gamma 1 at 100 kimg
# 4.2x, 0.60; at 120 kimg 3.5x, 0.64; at 140 kimg 4.0x, 0.63; batch 128 4.2x, 0.55; DiffAugment
# translation,cutout 6.7x, 0.49; no instance noise 6.9x, 0.58; at 120 kimg: gamma 2 3.2x, 0.58;
# lr 3e-4 3.7x, 0.59; latent 32 3.7x, 0.62; EMA half-life uncapped 3.2x, 0.63; resize-convolution
# G (bilinear x2 + 3x3 conv, not kept) 4.4x, 0.61 (output layer only 3.5x, 0.62); G width 48 4.8x,
# 0.60; Adam beta1 0 3.5x, 0.64; label smoothing 0.1 4.2x, 0.60; R1 every 4 3.5x, 0.63. Precision
# stayed at 0.64 at most because an unconditional G maps one Gaussian onto ten separate digits and
# draws blends between them; an InfoGAN code (10 values read from z, D must recover it) gives each
# digit its own region of z. At 120 kimg (R1 gamma 1), seeds 0 / 1, FD/floor, P, R: no code 3.46x,
# 0.636, 0.905 / 4.25x, 0.611, 0.883; 10 values, weight 0.5 (the recipe) 2.72x, 0.775, 0.769 /
# 2.69x, 0.770, 0.812; weight 1 2.73x, 0.791, 0.783 / 2.86x, 0.776, 0.734; weight 0.3 2.98x,
# 0.752, 0.764 (seed 0); 16 values, weight 1 2.01x, 0.746, 0.764 / 2.19x, 0.791, 0.706.
# No online evaluations (eval_every 0): the demo exports the last checkpoint and the gate scores
# it, and the evaluations (fixed seeds, they do not change the weights) cost ~15 s a family.
# StyleGAN-lite with the family defaults was refused at 36 kimg (40.5x, precision 0.57, recall
# 0.33). channels_last: StyleGAN-lite trained 8 kimg in 59 s of steps with it and 85 s without
# (two processes side by side); in two fresh-clone demos beside the same StyleGAN-lite, the cGAN
# (130 kimg) trained in 238 s with it and 282 s without, the DCGAN in 216 s and 277 s.
# StyleGAN-lite, same seed and scoring, 50 kimg unless said: R1 gamma 4 27x (45 kimg), gamma 10
# 25x, gamma 0.01 69x (36 kimg); the latent code: 15.6x, P 0.69 but recall 0.24 (one image per
# value); with mode seeking 0.2 10.3x, P 0.52, R 0.65; 0.1 8.0x, 0.65, 0.58; lr 3e-3 with 0.2
# 7.8x, 0.56, 0.69; lr 3e-3 with 0.1 6.1x, 0.68, 0.64 at 48 kimg and 5.2x, 0.70, 0.69 at 60;
# lr 4e-3 6.1x, 0.62, 0.67 at 48 and 4.1x, 0.67, 0.73 at 60. A 4x4 transposed-conv G and
# stride-2 D (1.6x the step speed, not kept) reached the same figures per second of training.
# After the activation-gain folding (same functions, fewer passes), lr 4e-3 at 64 kimg: mode
# seeking 0.1 4.8x, 0.69, 0.75 (56 kimg: 5.6x, 0.67, 0.68); 0.05 (the recipe) seed 0 at 56 / 64
# / 72 / 80 kimg 5.3x / 3.8x / 3.1x / 2.7x, P 0.74 / 0.75 / 0.77 / 0.79, R 0.64 / 0.74 / 0.74 /
# 0.77 (80 kimg: the first to beat the DCGAN's 0.77); seed 1 at 64 / 72 / 80 kimg 4.0x / 2.9x /
# 2.6x, P 0.79 / 0.81 / 0.82, R 0.65 / 0.70 / 0.72. StyleGAN-lite has no instance noise, so a
# longer run is the shorter one continued. cGAN mode seeking 0.15 against 0.2 (seed 0, 100
# kimg): 2.4x, P 0.74, R 0.83, accuracy 0.968, weakest class 0.74 against 3.1x, 0.68, 0.84,
# 0.958, 0.73. DCGAN at 100 kimg 3.9x, 0.76, 0.76 (120: 2.6x, 0.77, 0.78).
DEMO_OPTIONS: dict[str, dict[str, Any]] = {
    "dcgan": {"resolution": 32, "g_width": 32, "d_width": 32, "kimg": 120, "lr": 5e-4,
              "r1_gamma": 1.0, "precision": "bf16", "channels_last": True, "latent_code": 10,
              "code_weight": 0.5, "eval_every": 0},
    "cgan": {"resolution": 32, "g_width": 32, "d_width": 32, "kimg": 100, "lr": 3.5e-4,
             "precision": "bf16", "channels_last": True, "g_cond": "concat",
             "augment": "translation,cutout", "mode_seeking": 0.15, "eval_every": 0},
    "stylegan": {"resolution": 32, "g_width": 16, "d_width": 16, "kimg": 80, "lr": 4e-3,
                 "r1_gamma": 4.0, "precision": "bf16", "channels_last": True, "latent_code": 10,
                 "code_weight": 0.5, "mode_seeking": 0.05, "eval_every": 0},
}  # fmt: skip
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
    """How the run in ``run_dir`` differs from the recipe ``options`` (``key saved -> wanted``)."""
    config = read_run_config(run_dir)
    saved = {**config.get("model", {}), **config.get("train", {})}
    wanted = {**options, "model": kind, "seed": seed}  # train["model"] is the family
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
