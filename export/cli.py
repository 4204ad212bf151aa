"""``gan-export``: training run -> verified bundle, the FID gate, the BentoML model store.

    gan-export runs/NAME --out bundles/NAME [--formats onnx,torchscript] [--gate --ref REF.npz]
    gan-export gate bundles/NAME --ref REF.npz [--max-fd-ratio 6 | --max-fd X] [--min-recall 0.6 ...]
    gan-export push bundles/NAME          # import a passing bundle into the BentoML store
    gan-export list                       # bundles in the BentoML store
    gan-export import netG_epoch_24.pth --out bundles/NAME   # a generator trained elsewhere

Results (what was written, the gate's verdict) go to stdout; progress is logged to stderr
(``-v`` more, ``-q`` only warnings and errors).
Exit status: 0 done (gate passed), 1 the gate failed (bundle kept, not deployable), 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from export.import_cli import add_parser as add_import_parser
from export.import_cli import signature as import_signature
from gancore.cliutil import add_common_args, configure_logging, progress_enabled
from gancore.errors import ExportError
from training.errors import UserError

COMMANDS = ("gate", "push", "list", "import")
log = logging.getLogger(__name__)


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v < 2:
        raise argparse.ArgumentTypeError(f"must be at least 2, got {v}")
    return v


GATE_RULE_FLAGS = (
    "max_fd",
    "max_fd_ratio",
    "min_precision",
    "min_recall",
    "min_cond_accuracy",
    "min_class_recall",
)


def _gate_options(p: argparse.ArgumentParser) -> None:
    from export.gate import DEFAULT_N, GateRules

    d = GateRules()
    g = p.add_argument_group("gate (a bundle passes only if it meets every rule)")
    g.add_argument("--ref", help="reference statistics .npz (gan-eval stats)")
    g.add_argument("--max-fd", type=float, help="distance <= X (instead of --max-fd-ratio)")
    g.add_argument(
        "--max-fd-ratio",
        type=float,
        help=f"distance <= R x the real-vs-real floor (default {d.max_fd_ratio:g})",
    )
    g.add_argument(
        "--min-precision", type=float, help=f"precision >= P (default {d.min_precision:g})"
    )
    g.add_argument("--min-recall", type=float, help=f"recall >= R (default {d.min_recall:g})")
    g.add_argument(
        "--min-cond-accuracy",
        type=float,
        help=f"conditional models: class accuracy >= A (default {d.min_cond_accuracy:g})",
    )
    g.add_argument(
        "--min-class-recall",
        type=float,
        help=f"conditional models: every class's recall >= C (default {d.min_class_recall:g})",
    )
    g.add_argument(
        "-n", "--num", type=_positive_int, default=DEFAULT_N, help=f"samples (default {DEFAULT_N})"
    )
    g.add_argument("--no-filters", action="store_true", help="skip the top-k / DRS variants")
    g.add_argument("--classifier", help="classifier weights for the FD (default: the ref's)")
    g.add_argument(
        "--data-root",
        help="where torchvision datasets live (the real-vs-real floor reads the reference's "
        "dataset from there; as gan-train --data-root)",
    )
    g.add_argument("--kid-subsets", type=int, default=20, help=argparse.SUPPRESS)
    g.add_argument(
        "--to-bentoml", action="store_true", help="import into the BentoML store if passed"
    )


def export_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gan-export",
        description="Export a training run to a verified ONNX/TorchScript bundle "
        "(other commands: gate, push, list; see `gan-export gate -h`).",
    )
    p.add_argument("run", help="run directory (or a checkpoint file inside one)")
    p.add_argument("--out", required=True, help="bundle directory to write")
    p.add_argument("--formats", default="onnx,torchscript", help="onnx,torchscript[,pt2]")
    p.add_argument(
        "--checkpoint",
        default="auto",
        help="latest | best (lowest online FD) | auto: best when the run kept one, else latest",
    )
    p.add_argument("--name", help="bundle name (default: the --out folder name)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing bundle")
    p.add_argument(
        "--calibration-n",
        type=int,
        default=10_000,
        help="generated samples scored to calibrate the quality filters (default 10000)",
    )
    p.add_argument("--gate", action="store_true", help="run the FID gate after exporting")
    add_common_args(p)
    _gate_options(p)
    return p


def command_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gan-export")
    add_common_args(p)
    sub = p.add_subparsers(dest="command", required=True)
    g = sub.add_parser("gate", help="run the FID gate on a bundle and write gate.json")
    g.add_argument("bundle")
    _gate_options(g)
    s = sub.add_parser("push", help="import a passing bundle into the BentoML model store")
    s.add_argument("bundle")
    s.add_argument("--name", help="model name in the store (default: the bundle name)")
    sub.add_parser("list", help="ganforge bundles in the BentoML model store")
    add_import_parser(sub, _gate_options)
    for sp in sub.choices.values():
        add_common_args(sp, nested=True)
    return p


def _rules(args):
    from export.gate import GateRules

    return GateRules.make(**{k: getattr(args, k) for k in GATE_RULE_FLAGS})


def _gate(bundle: Path, args) -> int:
    from export.gate import run_gate

    gate = run_gate(
        bundle,
        args.ref,
        rules=_rules(args),
        n=args.num,
        with_filters=not args.no_filters,
        kid_subsets=args.kid_subsets,
        classifier=args.classifier,
        progress=log.info,
        progress_bar=progress_enabled(args),
        data_root=args.data_root,
    )
    print(f"gate {gate['verdict']}: {bundle.name}, N={gate['n']}, {gate['metric']}")
    for r in gate["rules"]:
        print(f"  {'pass' if r['passed'] else 'FAIL'}  {r['text']}")
    if gate.get("is"):
        print(f"  info  {gate['is']['metric']} {gate['is']['mean']:.3g} ± {gate['is']['std']:.2g}")
    for k, v in gate["filters"].items():
        failed = ", ".join(v["failed_rules"]) or "none"
        print(
            f"  with {k}: distance {v['distance']:.4g}, precision {v['precision']:.3g}, "
            f"recall {v['recall']:.3g}; failed rules: {failed}"
        )
    print(f"  report: {bundle / gate['report']}")
    if gate["verdict"] != "passed":
        log.error(
            f"error: the gate failed ({', '.join(gate['failed_rules'])}): {bundle} is not "
            f"deployable (see {bundle / 'gate.json'} and {bundle / gate['report']})"
        )
        return 1
    if args.to_bentoml:
        from export.store import push

        print(f"imported into the BentoML store as {push(bundle)}")
    return 0


def _check_gate_request(args) -> None:
    if args.to_bentoml and not args.gate:
        raise ExportError("--to-bentoml needs --gate (only a passing bundle can be imported)")
    if not args.gate:
        for opt in ("ref", "data_root", *GATE_RULE_FLAGS):
            if getattr(args, opt) is not None:
                flag = "--" + opt.replace("_", "-")
                raise ExportError(f"{flag} is a gate option: add --gate to run the gate")


def run_export(args) -> int:
    from export.exporter import export_run, parse_formats

    formats = parse_formats(args.formats)
    _check_gate_request(args)
    if args.gate:
        # Check the gate's inputs before spending minutes on the export.
        from export.gate import preflight
        from training.checkpoint import read_run_config

        run = Path(args.run)
        cfg = read_run_config(run if run.is_dir() else run.parent.parent)
        ds = (cfg.get("dataset") or {}).get("dataset")
        preflight(
            args.ref,
            ds,
            cfg["model"]["resolution"],
            _rules(args),
            args.num,
            classifier=args.classifier,
            data_root=args.data_root,
        )
    out = export_run(
        args.run,
        args.out,
        formats=formats,
        which=args.checkpoint,
        name=args.name,
        calibration_n=args.calibration_n,
        overwrite=args.overwrite,
        progress=log.info,
    )
    m = json.loads((out / "manifest.json").read_text())
    print(
        f"wrote {m['kind']} bundle {out} ({', '.join(m['formats'])}; parity max |diff| "
        f"{m['parity']['max_abs_diff']:.2g} at batches 1/7/64)"
    )
    if args.gate:
        return _gate(out, args)
    return 0


def run_command(args) -> int:
    if args.command == "import":
        return run_import(args)
    if args.command == "gate":
        if args.ref is None:
            raise ExportError("gate needs --ref REF.npz (reference statistics from gan-eval stats)")
        _rules(args)  # bad thresholds: exit 2 before the bundle is opened
        return _gate(Path(args.bundle), args)
    if args.command == "push":
        from export.store import push

        print(push(args.bundle, args.name))
        return 0
    from export.store import list_bundles

    for m in list_bundles():
        lab, meta = m["labels"], m["metadata"]
        print(
            f"{m['tag']}\t{lab.get('kind')}\t{lab.get('dataset')}\tgate={lab.get('gate')}\t"
            f"distance={meta.get('distance'):.4g}\tthreshold={meta.get('threshold'):.4g}"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "export":
        argv = argv[1:]
    is_command = bool(argv) and argv[0] in COMMANDS
    parser = command_parser() if is_command else export_parser()
    args = parser.parse_args(argv)
    configure_logging(args)
    try:
        return run_command(args) if is_command else run_export(args)
    except (ExportError, UserError) as e:
        log.error(f"error: {e}")
        return 2
    except KeyboardInterrupt:
        return 130


def run_import(args) -> int:
    """``gan-export import``: an external generator -> a bundle (export/import_bundle.py)."""
    from export.import_bundle import import_generator

    _check_gate_request(args)
    sig = import_signature(args)
    preflight = None
    if args.gate:
        from export.gate import preflight as gate_preflight

        def preflight(resolution: int) -> None:
            gate_preflight(args.ref, None, resolution, _rules(args), args.num,
                           classifier=args.classifier, data_root=args.data_root)  # fmt: skip

    out = import_generator(
        args.generator,
        args.out,
        discriminator=args.discriminator,
        signature=sig,
        formats=args.formats,
        name=args.name,
        calibration_n=args.calibration_n,
        overwrite=args.overwrite,
        progress=log.info,
        before_writing=preflight,
    )
    m = json.loads((out / "manifest.json").read_text())
    has_d = m["graphs"].get("discriminator") is not None
    print(
        f"wrote {m['kind']} bundle {out} from {Path(args.generator).name} "
        f"({m['image']['resolution']}x{m['image']['resolution']}x{m['image']['channels']}, "
        f"latent {m['latent_dim']}; {', '.join(m['formats'])}; parity max |diff| "
        f"{m['parity']['max_abs_diff']:.2g} at batches 1/7/64"
        + ("" if has_d else "; no discriminator: no filters")
        + ")"
    )
    if args.gate:
        if not has_d and not args.no_filters:
            log.info("gate: no discriminator, so the gate measures the raw generator only")
            args.no_filters = True
        return _gate(out, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
