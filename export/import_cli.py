"""``gan-export import``: an external generator becomes a bundle (:mod:`export.importer`).

    gan-export import netG_epoch_24.pth [--discriminator netD_epoch_24.pth] --out bundles/tutorial
    gan-export import generator.onnx --kind dcgan --latent-dim 100 [--discriminator d.onnx] \\
        --out bundles/mine [--range 0,1] [--layout nhwc]
    gan-export import generator.ts --kind cgan --latent-dim 64 --classes cat,dog --out bundles/pets
    ... [--gate --ref REF.npz]
"""

from __future__ import annotations

import argparse
import logging

from gancore.errors import ExportError

log = logging.getLogger(__name__)
SIGNATURE_FLAGS = ("kind", "latent_dim", "classes", "num_classes", "range", "layout")


def add_parser(sub, gate_options) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "import",
        help="an external generator (pytorch/examples DCGAN .pth, TorchScript .ts, ONNX .onnx) "
        "-> bundle",
        description="Import a generator trained elsewhere as a verified bundle. A pytorch/examples "
        "DCGAN state dict carries its own sizes; an ONNX or TorchScript generator needs its "
        "signature (--kind, --latent-dim, classes, --range, --layout).",
    )
    p.add_argument("generator", help="netG_epoch_N.pth, generator.ts or generator.onnx")
    p.add_argument(
        "--discriminator", help="its discriminator (same format): enables the quality filters"
    )
    p.add_argument("--out", required=True, help="bundle directory to write")
    p.add_argument("--name", help="bundle name (default: the --out folder name)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing bundle")
    p.add_argument("--formats", help="onnx[,torchscript] (default: both; ONNX files: onnx)")
    p.add_argument(
        "--calibration-n",
        type=int,
        default=10_000,
        help="generated samples scored to calibrate the quality filters (default 10000)",
    )
    s = p.add_argument_group("signature of an ONNX or TorchScript generator")
    s.add_argument("--kind", choices=("dcgan", "cgan"), help="unconditional or class-conditional")
    s.add_argument("--latent-dim", type=int, help="size of z (z is [N, D] or [N, D, 1, 1])")
    s.add_argument("--classes", help="cgan: class names in label order, comma-separated")
    s.add_argument("--num-classes", type=int, help="cgan: K classes named 0..K-1")
    s.add_argument("--range", help="the output's value range LO,HI (default -1,1)")
    s.add_argument("--layout", choices=("nchw", "nhwc"), help="the output's layout (default nchw)")
    p.add_argument("--gate", action="store_true", help="run the FID gate after importing")
    gate_options(p)
    return p


def signature(args):
    """The declared Signature, or None when no signature flag was given."""
    from export.importer import Signature, class_names, parse_range

    given = [f for f in SIGNATURE_FLAGS if getattr(args, f) is not None]
    if not given:
        return None
    if args.kind is None or args.latent_dim is None:
        flags = ", ".join("--" + f.replace("_", "-") for f in given)
        raise ExportError(f"{flags}: a signature needs at least --kind and --latent-dim")
    return Signature(
        kind=args.kind,
        latent_dim=args.latent_dim,
        class_names=class_names(args.classes, args.num_classes),
        value_range=parse_range(args.range) if args.range else (-1.0, 1.0),
        layout=args.layout or "nchw",
    )
