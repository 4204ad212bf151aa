"""``gan-eval``: feature classifiers, reference statistics, the real-vs-real floor and scores.

    gan-eval train-classifier --dataset digits [--out PATH]
    gan-eval stats --dataset digits --features classifier --split heldout --out refs/digits.npz
    gan-eval floor --dataset digits -n 1000
    gan-eval score runs/demo --ref refs/digits.npz -n 1000 --seed 0 [--is]
    gan-eval import-stats fid_stats_cifar10_train.npz --extractor inception --out refs/c10.npz
    gan-eval compare refs/a.npz refs/b.npz                 # Fréchet distance of two references

Results are one JSON object on stdout; progress and warnings are logged to stderr (``-v`` more,
``-q`` only warnings). User mistakes print ``error: ...`` and exit 2 without a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from gancore.cliutil import add_common_args, configure_logging
from training.errors import UserError

DEFAULT_RESOLUTION = 32
log = logging.getLogger(__name__)


def _emit(obj: dict[str, Any]) -> None:
    print(json.dumps(obj, indent=2, ensure_ascii=False))


def _add_extractor_args(p: argparse.ArgumentParser, features: bool = True) -> None:
    if features:
        p.add_argument(
            "--features",
            default="classifier",
            choices=["classifier", "inception"],
            help="feature extractor (default: classifier, offline; inception: FID, its weights "
            "are downloaded once into $TORCH_HOME/hub/checkpoints/)",
        )
    p.add_argument("--classifier", help="classifier .safetensors (default: $GANFORGE_HOME/...)")
    p.add_argument(
        "--no-train-classifier",
        action="store_true",
        help="fail instead of training the dataset's classifier when it is missing",
    )
    p.add_argument(
        "--inception-weights",
        help="pt_inception-2015-12-05-6726825d.pth (default: $TORCH_HOME/hub/checkpoints/, "
        "downloaded when missing)",
    )
    p.add_argument("--data-root", help="where torchvision datasets live")


def _extractor(args, dataset: str | None, name: str | None = None):
    from training.eval.features import get_extractor

    return get_extractor(
        name or args.features,
        dataset=dataset,
        classifier_path=args.classifier,
        train_if_missing=not args.no_train_classifier,
        inception_weights=args.inception_weights,
        data_root=args.data_root,
        log=log.info,
    )


def _check_n(n: int | None) -> None:
    from training.eval.errors import EvalError

    if n is not None and n < 2:
        raise EvalError(f"-n must be at least 2, got {n}")


def cmd_train_classifier(args) -> dict[str, Any]:
    from training.eval.classifier import load_classifier, train_classifier

    path = train_classifier(
        args.dataset,
        args.resolution,
        args.out,
        epochs=args.epochs,
        data_root=args.data_root,
        log=log.info,
    )
    _, info, sha = load_classifier(path)
    return {
        "classifier": str(path),
        "sha256": sha,
        "dataset": info["dataset"],
        "heldout_accuracy": info["heldout_accuracy"],
        "heldout_size": info["heldout_size"],
        "preprocessing": info["preprocessing"],
        "seconds": info["seconds"],
    }


def cmd_stats(args) -> dict[str, Any]:
    from training.eval.score import reference_stats

    _check_n(args.n)
    out = Path(args.out)
    if out.suffix != ".npz":
        raise UserError(f"--out must end in .npz, got {args.out!r}")
    ext = _extractor(args, args.dataset)
    ref = reference_stats(
        ext,
        args.dataset,
        args.resolution,
        args.split,
        n=args.n,
        seed=args.seed,
        data_root=args.data_root,
    )
    ref.save(out)
    return {
        "out": str(out),
        "id": ref.id,
        "n": ref.n,
        "dataset": ref.dataset,
        "split": ref.split,
        "resolution": ref.resolution,
        "extractor": ref.extractor,
        "features_kept": None if ref.features is None else int(len(ref.features)),
    }


def cmd_floor(args) -> dict[str, Any]:
    """Real-vs-real: N images of the other split scored against the reference split's stats."""
    import numpy as np

    from training.datasets import load_dataset
    from training.eval.score import dataset_images, reference_stats, score_images, subset_indices

    _check_n(args.n)
    ext = _extractor(args, args.dataset)
    ref = reference_stats(
        ext, args.dataset, args.resolution, args.ref_split, data_root=args.data_root
    )
    sample_split = "train" if args.ref_split == "heldout" else "heldout"
    ds = load_dataset(args.dataset, args.resolution, sample_split, data_root=args.data_root)
    n = args.n if args.n is not None else len(ds)
    runs = []
    for r in range(args.repeats):
        idx = subset_indices(len(ds), n, args.seed + r, what=f"{args.dataset} {sample_split} split")
        batches = list(dataset_images(ds, idx))
        imgs = (x for x, _ in batches)
        labels = np.concatenate([y for _, y in batches]) if ds.num_classes else None
        runs.append(score_images(imgs, labels, ref=ref, extractor=ext, seed=args.seed + r))
    first = runs[0]
    fds = [x["fd"] for x in runs]
    return {
        "what": f"real-vs-real floor: {n} {sample_split} images vs the {args.ref_split} split",
        "metric": first["metric"],
        "fd": float(np.mean(fds)),
        "fd_std": float(np.std(fds)),
        "fd_runs": fds,
        "n": n,
        "seed": args.seed,
        "repeats": args.repeats,
        "kid_mean": first["kid_mean"],
        "kid_std": first["kid_std"],
        "precision": first["precision"],
        "recall": first["recall"],
        "cond_accuracy": first["cond_accuracy"],
        "dataset": args.dataset,
        "resolution": args.resolution,
        "sample_split": sample_split,
        "ref_split": args.ref_split,
        "reference": first["reference"],
        "extractor": first["extractor"],
        "note": first["note"],
        "warnings": first["warnings"],
    }


def cmd_score(args) -> dict[str, Any]:
    from training.checkpoint import load_run
    from training.eval.score import extractor_for_ref, load_ref, score_generator
    from training.eval.stats import check_compatible, check_same_data

    _check_n(args.n)
    ref = load_ref(args.ref)
    run = load_run(args.run, which=args.which)
    dataset = (run.config.get("dataset") or {}).get("dataset")
    check_same_data(ref, dataset, run.model_cfg.resolution)
    ext = extractor_for_ref(
        ref,
        classifier_path=args.classifier,
        train_if_missing=False,
        inception_weights=args.inception_weights,
    )
    check_compatible(ext.describe(), ref.extractor)
    t0 = time.perf_counter()
    out = score_generator(
        run.G_ema,
        run.model_cfg,
        ref,
        args.n,
        seed=args.seed,
        extractor=ext,
        dataset=dataset,
        batch=args.batch,
        require_is=args.require_is,
    )
    log.info(f"scored {args.n} images in {time.perf_counter() - t0:.1f} s")
    out["run"] = {
        "run_dir": str(run.run_dir),
        "checkpoint": str(run.checkpoint),
        "step": run.step,
        "kind": run.model_cfg.kind,
        "dataset": dataset,
        "resolution": run.model_cfg.resolution,
    }
    return out


def cmd_import_stats(args) -> dict[str, Any]:
    """A pytorch-fid / TTUR statistics file -> a reference with provenance."""
    from training.eval.errors import EvalError
    from training.eval.inception import InceptionExtractor
    from training.eval.stats import import_stats

    if args.extractor != "inception":
        raise EvalError(
            f"--extractor {args.extractor!r} cannot be imported: published statistics (pytorch-fid, "
            "TTUR) are Inception pool3 features, so use --extractor inception; make "
            "FD-classifier references with `gan-eval stats --features classifier`"
        )
    out = Path(args.out)
    if out.suffix != ".npz":
        raise UserError(f"--out must end in .npz, got {args.out!r}")
    if args.resolution is not None and args.dataset is None:
        raise UserError("--resolution describes --dataset: give both or neither")
    ref = import_stats(
        args.file,
        InceptionExtractor.standard_description(),
        dataset=args.dataset,
        resolution=args.resolution if args.dataset else None,
        split=args.split if args.dataset else None,
    )
    log.debug(f"read mu {ref.mu.shape} and sigma {ref.sigma.shape} from {args.file}")
    ref.save(out)
    log.info(
        f"imported {args.file} ({ref.extractor['id']}, d = {len(ref.mu)}) -> {out}; it holds "
        "only mu and sigma: FID can be computed against it, KID and precision/recall cannot"
    )
    return {
        "out": str(out),
        "id": ref.id,
        "source": ref.source,
        "dataset": ref.dataset,
        "resolution": ref.resolution,
        "split": ref.split,
        "extractor": ref.extractor,
    }


def cmd_compare(args) -> dict[str, Any]:
    """Fréchet distance between two references made with the same extractor."""
    from training.eval.fid import frechet_distance
    from training.eval.score import load_ref
    from training.eval.stats import check_compatible

    a, b = load_ref(args.a), load_ref(args.b)
    check_compatible(a.extractor, b.extractor, what=f"reference {args.a}")
    return {
        "metric": a.extractor.get("metric"),
        "fd": frechet_distance(a.mu, a.sigma, b.mu, b.sigma),
        "a": {"path": args.a, "id": a.id, "n": a.n, "source": a.source},
        "b": {"path": args.b, "id": b.id, "n": b.n, "source": b.source},
        "extractor": a.extractor,
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gan-eval",
        description="Evaluate GAN generators: FD-classifier / FID, KID, precision & recall.",
    )
    sub = p.add_subparsers(dest="cmd", required=True)

    t = sub.add_parser("train-classifier", help="train the dataset's feature classifier")
    t.add_argument("--dataset", required=True)
    t.add_argument("--resolution", type=int, default=DEFAULT_RESOLUTION)
    t.add_argument("--out", help="weights .safetensors (default: $GANFORGE_HOME/classifiers/)")
    t.add_argument("--epochs", type=int, default=10)
    t.add_argument("--data-root")
    t.set_defaults(func=cmd_train_classifier)

    s = sub.add_parser("stats", help="reference statistics of a dataset split")
    s.add_argument("--dataset", required=True)
    s.add_argument("--split", choices=["train", "heldout"], default="heldout")
    s.add_argument("--resolution", type=int, default=DEFAULT_RESOLUTION)
    s.add_argument("--out", required=True, help="refs/NAME.npz")
    s.add_argument("-n", type=int, help="a seeded subset of N images (default: all)")
    s.add_argument("--seed", type=int, default=0)
    _add_extractor_args(s)
    s.set_defaults(func=cmd_stats)

    f = sub.add_parser("floor", help="real-vs-real distance at N: the floor under every threshold")
    f.add_argument("--dataset", required=True)
    f.add_argument("--resolution", type=int, default=DEFAULT_RESOLUTION)
    f.add_argument("-n", type=int, help="sample size (default: the whole other split)")
    f.add_argument("--ref-split", choices=["heldout", "train"], default="heldout")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--repeats", type=int, default=1, help="subsets to average over")
    _add_extractor_args(f)
    f.set_defaults(func=cmd_floor)

    c = sub.add_parser("score", help="score a run directory or checkpoint against a reference")
    c.add_argument("run", metavar="RUN_OR_CHECKPOINT")
    c.add_argument("--ref", required=True, help="refs/NAME.npz from `gan-eval stats`")
    c.add_argument("-n", type=int, default=1000, help="number of generated images")
    c.add_argument("--seed", type=int, default=0, help="first seed (seeds S .. S+N-1)")
    c.add_argument("--which", choices=["latest", "best"], default="latest")
    c.add_argument("--batch", type=int, default=500)
    c.add_argument(
        "--is",
        dest="require_is",
        action="store_true",
        help="fail (exit 2) unless the Inception Score can be computed; it is reported whenever "
        "the extractor has class probabilities (IS-classifier, or IS with the FID Inception)",
    )
    _add_extractor_args(c, features=False)
    c.set_defaults(func=cmd_score)

    i = sub.add_parser(
        "import-stats", help="a pytorch-fid / TTUR statistics file (mu, sigma) -> a reference"
    )
    i.add_argument("file", metavar="FILE.npz", help="statistics file with arrays mu and sigma")
    i.add_argument(
        "--extractor",
        required=True,
        help="the network the statistics were computed with: inception (the FID Inception-v3)",
    )
    i.add_argument("--out", required=True, help="refs/NAME.npz to write")
    i.add_argument(
        "--dataset",
        help="the dataset the statistics describe (e.g. cifar10): lets `gan-eval score` and the "
        "gate check a run's dataset and measure the real-vs-real floor",
    )
    i.add_argument("--resolution", type=int, help="with --dataset: the images' resolution")
    i.add_argument("--split", choices=["train", "heldout"], default="train")
    i.set_defaults(func=cmd_import_stats)

    m = sub.add_parser("compare", help="Fréchet distance between two reference files")
    m.add_argument("a", metavar="A.npz")
    m.add_argument("b", metavar="B.npz")
    m.set_defaults(func=cmd_compare)
    add_common_args(p)
    for sp in sub.choices.values():
        add_common_args(sp, nested=True)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = args.func(args)
        for w in caught:
            if issubclass(w.category, UserWarning):
                log.warning(f"warning: {w.message}")
    except UserError as e:
        log.error(f"error: {e}")
        return 2
    except KeyboardInterrupt:
        log.error("error: interrupted")
        return 130
    _emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
