"""``make demo``: the whole pipeline on the embedded digits data, with the real commands.

    python -m export.demo [--runs runs/demo] [--bundles bundles] [--port 3000] [--no-serve]

1. reference statistics of the held-out digits (``gan-eval stats``, while the trainings start),
2. train DCGAN, cGAN and StyleGAN-lite on digits (``training.demo``; finished runs are reused),
   and export + gate each family as soon as it is trained, while the others still train, with
   the gate's default rules (``gan-export RUN --out BUNDLE --gate --ref REF``; a bundle whose gate
   already passed, with today's rules, for the run's current checkpoint is reused),
3. serve the deployable bundles over HTTP (``python -m serving.demo``), printing curl examples.

Each command is printed before it runs (an export's own output is printed in one piece when it
ends, so that two of them do not interleave), so the demo doubles as a walk-through. The driver
lives in ``export`` because it needs training (allowed: export -> training); serving runs as its
own process, so no layer imports one above it.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from gancore.errors import BundleError

RESOLUTION = 32
# Filter calibration samples per bundle. The DRS/top-k calibration does not enter the gate's
# verdict; 2,000 instead of gan-export's 10,000 saves most of the StyleGAN-lite export time.
CALIBRATION_N = 2000


def _bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def _show(cmd: list[str]) -> None:
    print("\n$ " + " ".join(shlex.quote(c) for c in cmd), file=sys.stderr, flush=True)


def _run(cmd: list[str]) -> int:
    _show(cmd)
    return subprocess.call(cmd)


_PRINT = threading.Lock()


def _run_quietly(cmd: list[str], threads: int = 1) -> int:
    """Like :func:`_run`, for commands that run beside others: the command is printed when it
    starts, its output in one piece when it ends."""
    with _PRINT:
        _show(cmd)
    # No progress bars in the captured output; one torch thread while it shares the cores with
    # the trainings (ONNX Runtime's threads do not spin, see gancore.bundle).
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    with _PRINT:
        print(f"[{Path(cmd[0]).name} {cmd[1]}]", file=sys.stderr)
        print(done.stdout.rstrip(), file=sys.stderr, flush=True)
    return done.returncode


def _current_verdict(bundle: Path, run_dir: Path) -> str | None:
    """The verdict (``"passed"``/``"failed"``) of ``bundle``'s gate when that gate holds for the
    checkpoint the export chooses (``auto``) under the demo's rules (the defaults), else None: export again."""
    from export.gate import DEFAULT_N, GateRules
    from gancore.bundle import load, sha256_file
    from training.checkpoint import choose_checkpoint

    if not (bundle / "gate.json").is_file():
        return None
    try:
        b = load(bundle, require_gate=False)  # verifies every checksum
    except BundleError:
        return None
    gate = b.gate or {}
    if gate.get("manifest_sha256") != b.manifest_sha256:
        return None  # a gate.json written for another manifest (or none readable)
    if gate.get("thresholds") != GateRules().to_dict() or gate.get("n") != DEFAULT_N:
        return None  # gated under other rules than the demo's (the defaults)
    source = b.manifest.get("source", {})
    # By content: a run retrained in the same folder has a checkpoint of the same name.
    if source.get("checkpoint_sha256") != sha256_file(choose_checkpoint(run_dir)):
        return None
    return gate.get("verdict")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m export.demo", description=__doc__.splitlines()[0])
    p.add_argument("--runs", default="runs/demo")
    p.add_argument("--bundles", default="bundles")
    p.add_argument("--refs", default="refs")
    p.add_argument("--port", type=int, default=3000)
    p.add_argument("--no-serve", action="store_true", help="stop after the gate")
    a = p.parse_args(argv)

    from training.demo import DEMO_OPTIONS, train_demo_models
    from training.errors import UserError

    print("== 1/3 reference statistics of the held-out digits (beside the trainings)",
          file=sys.stderr)  # fmt: skip
    ref = Path(a.refs) / f"digits-{RESOLUTION}-heldout.npz"
    # Only the gates need them, so they are computed while the trainings start: ~13 s less
    # before the first training step.
    ref_job: Future | None = None
    if ref.is_file():
        print(f"reusing {ref}", file=sys.stderr)
    else:
        ref.parent.mkdir(parents=True, exist_ok=True)
        cmd = [_bin("gan-eval"), "stats", "--dataset", "digits", "--resolution", str(RESOLUTION)]
        ref_job = ThreadPoolExecutor(max_workers=1).submit(
            _run_quietly, [*cmd, "--split", "heldout", "--out", str(ref)]
        )

    def ref_ready() -> bool:
        return ref_job is None or ref_job.result() == 0

    print(
        "\n== 2/3 train (reuses finished runs); export and gate each family once trained",
        file=sys.stderr,
    )
    gated: dict[str, bool] = {}

    def bundle_of(kind: str) -> Path:
        return Path(a.bundles) / f"digits-{kind}"

    handled: list[str] = []
    exporting = [0]  # exports running now (train_demo_models may run two at once)
    lock = threading.Lock()

    def export_and_gate(kind: str, run_dir: Path) -> None:
        with lock:
            handled.append(kind)
            # The last family, exported once every training has ended and alone, has all the
            # cores; beside a training or another export, one thread.
            alone = len(handled) == len(DEMO_OPTIONS) and exporting[0] == 0
            exporting[0] += 1
        try:
            _export_and_gate(kind, run_dir, (os.cpu_count() or 1) if alone else 1)
        finally:
            with lock:
                exporting[0] -= 1

    def _export_and_gate(kind: str, run_dir: Path, threads: int) -> None:
        if not ref_ready():
            gated[kind] = False
            print(f"{kind}: not exported: the reference statistics failed (above)",
                  file=sys.stderr, flush=True)  # fmt: skip
            return
        bundle = bundle_of(kind)
        verdict = _current_verdict(bundle, run_dir)
        if verdict == "passed":
            print(f"{kind}: reusing gated bundle {bundle}", file=sys.stderr, flush=True)
            gated[kind] = True
            return
        if verdict == "failed":  # the same checkpoint under the same rules: the same verdict
            print(f"{kind}: {bundle} was refused by the gate for this checkpoint; not exported "
                  f"again (see {bundle / 'gate.md'})", file=sys.stderr, flush=True)  # fmt: skip
            gated[kind] = False
            return
        cmd = [_bin("gan-export"), str(run_dir), "--out", str(bundle), "--overwrite",
               "--calibration-n", str(CALIBRATION_N), "--gate", "--ref", str(ref)]  # fmt: skip
        gated[kind] = _run_quietly(cmd, threads) == 0

    try:
        runs = train_demo_models(a.runs, after=export_and_gate)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not ref_ready():
        print(f"error: computing the reference statistics {str(ref)!r} failed", file=sys.stderr)
        return 2
    bundles = [bundle_of(k) for k in runs if gated.get(k)]
    failed = [k for k in runs if not gated.get(k)]
    for kind in runs:
        bundle = bundle_of(kind)
        if not (bundle / "gate.json").is_file():
            continue
        gate = json.loads((bundle / "gate.json").read_text())
        rules = "; ".join(r["text"] for r in gate.get("rules", []))
        print(f"  {bundle}: {gate['verdict']} ({rules})", file=sys.stderr)
        print(f"  {'':{len(str(bundle))}}  report: {bundle / 'gate.md'}", file=sys.stderr)
    if failed:
        print(f"not deployable (gate failed): {', '.join(failed)}", file=sys.stderr)
    if not bundles:
        print("error: no bundle passed the gate; nothing to serve", file=sys.stderr)
        return 1
    if a.no_serve:
        return 0

    print("\n== 3/3 serve (Ctrl-C to stop)", file=sys.stderr)
    return _run([sys.executable, "-m", "serving.demo", *map(str, bundles), "--port", str(a.port)])


if __name__ == "__main__":
    sys.exit(main())
