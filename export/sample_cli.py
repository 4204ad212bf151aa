"""``gan-sample``: offline generation from a bundle (no torch for ONNX bundles).

    gan-sample bundles/NAME --seeds 0-15,42 --truncation 0.7 [--class 3] --grid out.png
    gan-sample bundles/NAME --seeds 0-7 --outdir out/          # one PNG per seed
    gan-sample bundles/NAME --style-mix --rows 1,2,3 --cols 4,5 --styles 0-3 --grid mix.png
    gan-sample bundles/NAME --walk 1,5,9 --frames 30 --loop --fps 20 --out walk.webp  # or .gif

The images (and a walk's frames) are the ones the server returns for the same request (same
sampling module).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from gancore import images, sampling
from gancore.cliutil import add_common_args, configure_logging
from gancore.errors import ExportError

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gan-sample", description="Generate images from an exported bundle."
    )
    a = p.add_argument
    a("bundle", help="bundle directory written by gan-export")
    a("--seeds", help="seeds, e.g. 0-15,42")
    a("--truncation", type=float, default=1.0, help="psi (1 = none; StyleGAN w, DCGAN z tails)")
    a("--truncation-cutoff", type=int, help="StyleGAN: truncate only the first N style layers")
    a("--class", dest="class_", help="class index or name (conditional models)")
    a("--grid", help="write all images as one PNG grid")
    a("--outdir", help="write one PNG per seed (seedNNNN.png)")
    a("--nrow", type=int, help="images per grid row")
    a("--style-mix", action="store_true", help="StyleGAN: the style-mixing grid")
    a("--rows", help="style mixing: row seeds (e.g. 1,2,3)")
    a("--cols", help="style mixing: column seeds (e.g. 4,5)")
    a("--styles", default="coarse", help="style layers from the columns: 0-3 or coarse|middle|fine")
    a("--walk", help="a latent walk through these seeds (e.g. 1,5,9), written as an animation")
    a("--frames", type=int, default=sampling.WALK_FRAMES, help="walk: frames per segment")
    a("--loop", action="store_true", help="walk: go back from the last seed to the first")
    a("--fps", type=int, default=sampling.WALK_FPS, help="walk: frames per second")
    a("--space", default="z", help="walk: z (slerp) or w (StyleGAN-lite, lerp)")
    a("--scale", type=int, default=1, help="walk: integer upscaling of each frame")
    a("--out", help="walk: the animation to write (.gif or .webp)")
    a("--backend", default="onnx", help="onnx | torchscript")
    a("--device", default="auto", help="auto | cpu | cuda")
    a("--threads", type=int, help="ONNX Runtime intra-op threads")
    a("--require-gate", action="store_true", help="refuse a bundle without a passing gate")
    add_common_args(p)
    return p


def _load(args):
    """The bundle as the options ask (imported late: parsing comes before anything heavy)."""
    from gancore.bundle import load

    return load(
        args.bundle,
        backend=args.backend,
        device=args.device,
        require_gate=args.require_gate,
        threads=args.threads,
    )


def _class_index(text: str | None, b) -> int | None:
    if text is None:
        return None
    if b.num_classes <= 0:
        raise ExportError(f"--class given but {b.name!r} is an unconditional {b.kind} model")
    if text in b.class_names:
        return b.class_names.index(text)
    try:
        c = int(text)
    except ValueError:
        raise ExportError(
            f"unknown class {text!r}; use 0..{b.num_classes - 1} or one of {b.class_names}"
        ) from None
    if not 0 <= c < b.num_classes:
        raise ExportError(
            f"class {c} is out of range: this model has classes 0..{b.num_classes - 1}"
        )
    return c


def _check_args(args) -> None:
    if args.walk is not None or args.out is not None:
        if args.walk is None or args.out is None:
            raise ExportError("a walk needs both --walk SEEDS and --out FILE.gif|FILE.webp")
        if args.seeds or args.style_mix or args.grid or args.outdir:
            raise ExportError(
                "--walk writes only --out: drop --seeds, --style-mix, --grid, --outdir"
            )
        if Path(args.out).suffix.lower().lstrip(".") not in images.ANIMATION_FORMATS:
            raise ExportError(f"--out must be a .gif or .webp file, got {args.out!r}")
        if args.scale < 1:
            raise ExportError(f"--scale {args.scale} not allowed: use an integer >= 1")
        return
    if not args.grid and not args.outdir:
        raise ExportError("say where to write: --grid out.png and/or --outdir DIR")
    if args.grid and not args.grid.lower().endswith(".png"):
        raise ExportError(f"--grid must be a .png file, got {args.grid!r}")
    if args.style_mix:
        if not args.rows or not args.cols:
            raise ExportError("--style-mix needs --rows and --cols seeds")
    elif not args.seeds:
        raise ExportError("--seeds is required (e.g. --seeds 0-15,42)")


def run(args) -> str:
    _check_args(args)
    if args.walk is not None:
        return walk(args)
    # Parse the seeds before loading anything heavy.
    seeds = None if args.style_mix else sampling.parse_seeds(args.seeds)
    rows = sampling.parse_seeds(args.rows) if args.style_mix else None
    cols = sampling.parse_seeds(args.cols) if args.style_mix else None
    b = _load(args)
    c = _class_index(args.class_, b)
    if args.style_mix:
        if b.kind != "stylegan":
            raise ExportError(f"--style-mix needs a StyleGAN-lite bundle; {b.name!r} is {b.kind}")
        styles = sampling.parse_styles(args.styles, b.num_ws, b.style_ranges)
        lab = None
        if b.num_classes:
            lab = sampling.labels_for_seeds(rows + cols, b.num_classes, c)
        imgs = sampling.style_mix(b, rows, cols, styles, args.truncation, labels=lab)
        nrow = len(cols) + 1
        names = None
    else:
        labels = sampling.labels_for_seeds(seeds, b.num_classes, c)
        imgs = sampling.generate(b, seeds, labels, args.truncation, args.truncation_cutoff)
        nrow = args.nrow
        names = [f"seed{s:04d}.png" for s in seeds]
    written = []
    if args.grid:
        images.save_png(args.grid, images.make_grid(imgs, nrow=nrow))
        written.append(args.grid)
    if args.outdir:
        out = Path(args.outdir)
        out.mkdir(parents=True, exist_ok=True)
        tiles = images.to_uint8(imgs)
        names = names or [f"mix{i:03d}.png" for i in range(len(imgs))]
        for name, tile in zip(names, tiles):
            images.save_png(out / name, tile)
        written.append(f"{out}/ ({len(tiles)} files)")
    return (
        f"{len(imgs)} images from {b.name} ({b.kind}, {b.backend} on {b.provider}) -> "
        + ", ".join(written)
    )


def walk(args) -> str:
    """--walk: the server's ``/interpolate`` animation for the same fields, written to --out."""
    seeds = sampling.check_walk(sampling.parse_seeds(args.walk), args.frames, args.fps, args.loop)
    b = _load(args)
    c = _class_index(args.class_, b)
    frames = sampling.walk(
        b, seeds, args.frames, args.loop, args.space, c, args.truncation, args.fps
    )
    fmt = Path(args.out).suffix.lower().lstrip(".")
    data = images.encode_animation(images.to_uint8(frames), fmt, args.fps, args.scale)
    images.write_atomic(args.out, data)
    return (
        f"a {len(frames)}-frame walk through {len(seeds)} seeds from {b.name} ({b.kind}, "
        f"{b.backend} on {b.provider}) -> {args.out}"
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args)
    try:
        print(run(args))
        return 0
    except ExportError as e:
        log.error(f"error: {e}")
        return 2
    except OSError as e:
        log.error(f"error: cannot write output: {e}")
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
