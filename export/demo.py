"""``make demo``: the whole pipeline on the embedded digits data, with the real commands.

    python -m export.demo [--runs runs/demo] [--bundles bundles] [--port 3000] [--no-serve]

1. train DCGAN, cGAN and StyleGAN-lite on digits (``training.demo``; finished runs are reused),
2. reference statistics of the held-out digits (``gan-eval stats``),
3. export + gate each run with the gate's default rules (``gan-export RUN --out BUNDLE --gate
   --ref REF``; a bundle whose gate already passed, with today's rules, for the run's current
   checkpoint is reused),
4. serve the deployable bundles over HTTP (``python -m serving.demo``), printing curl examples.

Each command is printed before it runs, so the demo doubles as a walk-through. The driver lives
in ``export`` because it needs training (allowed: export -> training); serving runs as its own
process, so no layer imports one above it.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

from export.errors import BundleError

RESOLUTION = 32
# Filter calibration samples per bundle. The DRS/top-k calibration does not enter the gate's
# verdict; 2,000 instead of gan-export's 10,000 saves most of the StyleGAN-lite export time.
CALIBRATION_N = 2000


def _bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def _run(cmd: list[str]) -> int:
    print("\n$ " + " ".join(shlex.quote(c) for c in cmd), file=sys.stderr, flush=True)
    return subprocess.call(cmd)


def _gate_is_current(bundle: Path, run_dir: Path) -> bool:
    """True when ``bundle`` is deployable and was exported from the run's latest checkpoint."""
    from export.bundle import load
    from export.gate import DEFAULT_N, GateRules
    from training.checkpoint import latest_checkpoint

    if not (bundle / "gate.json").is_file():
        return False
    try:
        b = load(bundle, require_gate=True)
    except BundleError:
        return False
    if b.gate.get("thresholds") != GateRules().to_dict() or b.gate.get("n") != DEFAULT_N:
        return False  # gated under other rules than the demo's (the defaults)
    source = b.manifest.get("source", {})
    return Path(str(source.get("checkpoint", ""))).name == latest_checkpoint(run_dir).name


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m export.demo", description=__doc__.splitlines()[0])
    p.add_argument("--runs", default="runs/demo")
    p.add_argument("--bundles", default="bundles")
    p.add_argument("--refs", default="refs")
    p.add_argument("--port", type=int, default=3000)
    p.add_argument("--no-serve", action="store_true", help="stop after the gate")
    a = p.parse_args(argv)

    from training.demo import train_demo_models
    from training.errors import UserError

    print("== 1/4 train (reuses finished runs)", file=sys.stderr)
    try:
        runs = train_demo_models(a.runs)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    print("\n== 2/4 reference statistics of the held-out digits", file=sys.stderr)
    ref = Path(a.refs) / f"digits-{RESOLUTION}-heldout.npz"
    if ref.is_file():
        print(f"reusing {ref}", file=sys.stderr)
    else:
        ref.parent.mkdir(parents=True, exist_ok=True)
        cmd = [_bin("gan-eval"), "stats", "--dataset", "digits", "--resolution", str(RESOLUTION)]
        if _run([*cmd, "--split", "heldout", "--out", str(ref)]):
            return 2

    print("\n== 3/4 export and gate", file=sys.stderr)
    bundles: list[Path] = []
    failed: list[str] = []
    for kind, run_dir in runs.items():
        bundle = Path(a.bundles) / f"digits-{kind}"
        if _gate_is_current(bundle, run_dir):
            print(f"{kind}: reusing gated bundle {bundle}", file=sys.stderr)
            bundles.append(bundle)
            continue
        rc = _run(
            [
                _bin("gan-export"),
                str(run_dir),
                "--out",
                str(bundle),
                "--overwrite",
                "--calibration-n",
                str(CALIBRATION_N),
                "--gate",
                "--ref",
                str(ref),
            ]
        )
        if rc == 0:
            bundles.append(bundle)
        else:
            failed.append(kind)
    for kind in runs:
        bundle = Path(a.bundles) / f"digits-{kind}"
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

    print("\n== 4/4 serve (Ctrl-C to stop)", file=sys.stderr)
    return _run([sys.executable, "-m", "serving.demo", *map(str, bundles), "--port", str(a.port)])


if __name__ == "__main__":
    sys.exit(main())
