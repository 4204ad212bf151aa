"""``gan-train``: train a DCGAN, cGAN or StyleGAN-lite and write a run directory.

    gan-train --model cgan --dataset digits --resolution 32 --kimg 50 --out runs/cgan-digits
    gan-train --out runs/cgan-digits --resume --kimg 100     # continue (and extend) that run
    gan-train --model dcgan --dataset folder:photos --minutes 10 --out runs/photos  # a budget
    gan-train --out runs/photos --resume --minutes 5         # five minutes more
    torchrun --standalone --nproc_per_node 2 -m training.cli --batch-size 64 ...  # 2 processes

User mistakes print ``error: ...`` on stderr and exit with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from gancore.cliutil import add_common_args, configure_logging
from training.budget import process_start
from training.distributed import PeerLost
from training.errors import UserError
from training.train_config import describe_default

EPILOG = """\
defaults: what you do not give, the recipe chooses by rules from the dataset's size, resolution,
channels and classes, the family and the device (training/recipe.py; README "Your own data"):
bf16 where the device computes it natively, widths, batch, Adam, R1, instance noise, an InfoGAN
code of one value per class for unconditional families, mode seeking, ADA below 30,000 images,
online evaluation on labelled data. config.json's "recipe" says which setting came from which
rule and which you gave. --loss wgan-gp implies --n-critic 5 and no BatchNorm in the critic.
run directory: config.json, checkpoints/ckpt-STEP.pt (last --keep) and best.pt, samples/*.png,
metrics.jsonl, loss.png, progress.gif.
distributed: under torchrun (--nproc_per_node N, or --nnodes/--rdzv-endpoint) every process
trains on its slice of each global batch; --batch-size is the global batch (a multiple of N)."""


def _d(text: str, name: str) -> str:
    """Help text followed by the option's default, read from the config dataclasses."""
    return f"{text} ({describe_default(name)})"


def _minutes(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--minutes {text!r} is not a number; give minutes of wall time > 0, e.g. 10"
        ) from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gan-train",
        description="Train a GAN generator and write a resumable run directory.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # Every option defaults to None so the trainer can tell "not given" (family default, or
    # the resumed run's value) from an explicit choice.
    a = p.add_argument
    a("--model", help=_d("dcgan | cgan | stylegan", "model"))
    a(
        "--dataset",
        help=_d("digits | mnist | fashion-mnist | cifar10 | folder:PATH | fake", "dataset"),
    )
    a("--data-root", help="where torchvision datasets live (or are downloaded to)")
    a("--resolution", type=int, help=_d("power of two from 16 to 128", "resolution"))
    a("--out", required=True, help="run directory, e.g. runs/cgan-digits")
    a("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    a("--seed", type=int, help=_d("seed for init, data order and latents", "seed"))
    a("--kimg", type=float, help=_d("training length in thousands of real images", "kimg"))
    a("--epochs", type=int, help="training length in epochs (overrides --kimg)")
    a("--minutes", type=_minutes,
      help="wall-time budget instead of --kimg/--epochs: the run measures its speed, plans its "
      "length and output intervals, and stops in time with a final checkpoint; with --resume, "
      "adds this many minutes")  # fmt: skip
    a("--batch-size", type=int,
      help=_d("global batch: under torchrun each of N processes takes 1/N", "batch_size"))  # fmt: skip
    a("--lr", type=float, help=_d("generator learning rate", "lr"))
    a("--lr-d", type=float, help="discriminator learning rate (default: --lr)")
    a("--beta1", type=float, help=_d("Adam beta1", "beta1"))
    a("--beta2", type=float, help=_d("Adam beta2", "beta2"))
    a("--loss", help=_d("bce (non-saturating) | hinge | wgan-gp", "loss"))
    a("--n-critic", type=int, help=_d("D steps per G step", "n_critic"))
    a("--gp-weight", type=float, help=_d("WGAN-GP penalty weight", "gp_weight"))
    a("--r1-gamma", type=float, help=_d("R1 penalty weight, 0 = off", "r1_gamma"))
    a("--r1-every", type=int, help=_d("lazy R1 interval in steps", "r1_every"))
    a("--label-smoothing", type=float, help=_d("one-sided label smoothing", "label_smoothing"))
    a("--instance-noise", type=float,
      help=_d("instance noise sigma at the start, annealed to 0", "instance_noise"))  # fmt: skip
    a("--augment",
      help="DiffAugment policies for every image D sees, comma-separated: "
      "color, brightness, saturation, contrast, translation, cutout; none = off")  # fmt: skip
    a("--ada-target", type=float,
      help=_d("ADA: augment D's inputs with a probability p steered so that E[sign(D(real))] "
              "stays near this target (0.6 in the paper); 0 = off", "ada_target"))  # fmt: skip
    a(
        "--ada-kimg",
        type=float,
        help="ADA: thousands of images for p to go from 0 to 1 (default: a tenth of the run)",
    )
    a("--xflip", action=argparse.BooleanOptionalAction, default=None,
      help="random left-right flips of D's inputs (off; digits are not mirror-symmetric)")  # fmt: skip
    a("--mode-seeking", type=float,
      help=_d("weight of MSGAN's mode-seeking term in G's loss (spreads samples of a class)",
              "mode_seeking"))  # fmt: skip
    a("--latent-code", type=int,
      help=_d("dcgan, stylegan: values of an InfoGAN categorical code read from z (D must "
              "recover it; 10 on digits: each value learns its own kind of digit, fewer "
              "blends); 0 = off",
              "latent_code"))  # fmt: skip
    a("--code-weight", type=float,
      help=_d("weight of the InfoGAN code loss (with --latent-code)", "code_weight"))  # fmt: skip
    a("--ema-kimg", type=float, help=_d("G_ema half-life in kimg", "ema_kimg"))
    a("--style-mixing", type=float, help=_d("stylegan style-mixing probability", "style_mixing"))
    a("--g-width", type=int,
      help=_d("generator width at its last layer (pytorch/examples ngf)", "g_width"))  # fmt: skip
    a("--d-width", type=int,
      help=_d("discriminator width at its first layer (ndf)", "d_width"))  # fmt: skip
    a("--latent-dim", type=int, help=_d("size of z", "latent_dim"))
    a("--w-dim", type=int, help=_d("stylegan: size of w", "w_dim"))
    a("--mapping-layers", type=int, help=_d("stylegan: layers of the mapping network",
                                            "mapping_layers"))  # fmt: skip
    a("--spectral-norm", action="store_true", default=None,
      help=_d("spectral norm in D", "spectral_norm"))  # fmt: skip
    a("--g-cond",
      help=_d("cgan: concat (label embedding joined to z) | cbn (class-conditional BatchNorm)",
              "g_cond"))  # fmt: skip
    a("--d-norm", help=_d("batch | none: normalisation in the DCGAN/cGAN discriminator", "d_norm"))
    a("--device", help=_d("auto | cpu | cuda (auto: cuda when available, with bf16 AMP)", "device"))
    a("--precision", help=_d("auto | fp32 | bf16", "precision"))
    a("--channels-last", action="store_true", default=None,
      help=_d("channels-last memory format", "channels_last"))  # fmt: skip
    a("--sample-every", type=int, help=_d("steps between sample grids", "sample_every"))
    a("--ckpt-every", type=int, help=_d("steps between checkpoints", "ckpt_every"))
    a("--eval-every", type=int,
      help=_d("steps between FD-classifier evaluations (keeps checkpoints/best.pt); 0 = off",
              "eval_every"))  # fmt: skip
    a("--log-every", type=int, help=_d("steps between metrics.jsonl records", "log_every"))
    a("--keep", type=int, help=_d("number of step checkpoints kept", "keep"))
    a("--num-workers", type=int, help=_d("DataLoader workers for on-disk datasets", "num_workers"))
    a("--progress", action=argparse.BooleanOptionalAction, default=None,
      help="progress bar (default: only when stderr is a terminal)")  # fmt: skip
    add_common_args(p)
    return p


def online_fd(cfg):
    """The FD-classifier evaluation the loop runs every --eval-every steps (None when off)."""
    if cfg.eval_every <= 0:
        return None
    from training.eval.online import OnlineFD

    return OnlineFD(cfg.dataset, cfg.resolution, data_root=cfg.data_root)


def main(argv: list[str] | None = None) -> int:
    # A --minutes budget counts from the process start (torch's import included) when this is
    # the program; called with arguments (from Python), from now.
    started = process_start() if argv is None else time.monotonic()
    args = build_parser().parse_args(argv)
    configure_logging(args)
    options = vars(args)
    options.pop("verbose"), options.pop("quiet")
    out, resume, progress = options.pop("out"), options.pop("resume"), options.pop("progress")
    try:
        from training.trainer import train

        result = train(
            options,
            out,
            resume=resume,
            progress=progress,
            make_eval_fn=online_fd,
            started=started,
        )
    except UserError as e:
        print(f"error: {_rank_prefix()}{e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except PeerLost as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if not _rank_prefix():
        print(f"trained {result.step}/{result.total_steps} steps; run directory {result.run_dir}")
    return 0


def _rank_prefix() -> str:
    """``rank R/N: `` under torchrun, so a message says which process it comes from."""
    world = os.environ.get("WORLD_SIZE", "1")
    return f"rank {os.environ.get('RANK', '?')}/{world}: " if world != "1" else ""


if __name__ == "__main__":
    sys.exit(main())
