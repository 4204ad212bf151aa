"""``gan-train``: train a DCGAN, cGAN or StyleGAN-lite and write a run directory.

    gan-train --model cgan --dataset digits --resolution 32 --kimg 50 --out runs/cgan-digits
    gan-train --out runs/cgan-digits --resume --kimg 100     # continue (and extend) that run

User mistakes print ``error: ...`` on stderr and exit with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import sys

from gancore.cliutil import add_common_args, configure_logging
from training.errors import UserError

EPILOG = """\
defaults depend on the family: dcgan/cgan use Adam(2e-4, 0.5, 0.999) and the non-saturating loss,
plus instance noise 0.3 annealed to 0 (without it D wins at once on digits and G collapses);
stylegan uses Adam(2e-3, 0, 0.99), R1 (gamma 1, every 16 steps) and style mixing 0.9;
--loss wgan-gp implies --n-critic 5 and no BatchNorm in the critic.
--augment (DiffAugment), --xflip and --mode-seeking are off unless given; the demo's cgan uses
--augment translation,cutout --mode-seeking 0.2 (python -m training.demo holds the demo recipe).
run directory: config.json, checkpoints/ckpt-STEP.pt (last --keep) and best.pt, samples/*.png,
metrics.jsonl, loss.png, progress.gif."""


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
    a("--model", help="dcgan | cgan | stylegan (default dcgan)")
    a("--dataset", help="digits | mnist | fashion-mnist | cifar10 | folder:PATH | fake")
    a("--data-root", help="where torchvision datasets live (or are downloaded to)")
    a("--resolution", type=int, help="power of two from 16 to 128 (default 32)")
    a("--out", required=True, help="run directory, e.g. runs/cgan-digits")
    a("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    a("--seed", type=int, help="seed for init, data order and latents (default 0)")
    a("--kimg", type=float, help="training length in thousands of real images (default 50)")
    a("--epochs", type=int, help="training length in epochs (overrides --kimg)")
    a("--batch-size", type=int, help="default 64")
    a("--lr", type=float, help="generator learning rate (default 2e-4)")
    a("--lr-d", type=float, help="discriminator learning rate (default: --lr)")
    a("--beta1", type=float, help="Adam beta1")
    a("--beta2", type=float, help="Adam beta2")
    a("--loss", help="bce (non-saturating) | hinge | wgan-gp")
    a("--n-critic", type=int, help="D steps per G step (wgan-gp default 5)")
    a("--gp-weight", type=float, help="WGAN-GP penalty weight (default 10)")
    a("--r1-gamma", type=float, help="R1 penalty weight, 0 = off (stylegan default 1)")
    a("--r1-every", type=int, help="lazy R1 interval in steps (default 16)")
    a("--label-smoothing", type=float, help="one-sided label smoothing, e.g. 0.1")
    a("--instance-noise", type=float, help="instance noise sigma at the start, annealed to 0")
    a("--augment",
      help="DiffAugment policies for every image D sees, comma-separated: "
      "color, brightness, saturation, contrast, translation, cutout; none = off")  # fmt: skip
    a("--xflip", action=argparse.BooleanOptionalAction, default=None,
      help="random left-right flips of D's inputs (off; digits are not mirror-symmetric)")  # fmt: skip
    a("--mode-seeking", type=float,
      help="weight of MSGAN's mode-seeking term in G's loss (spreads samples of a class); 0 = off")  # fmt: skip
    a("--ema-kimg", type=float, help="G_ema half-life in kimg (default 10)")
    a("--style-mixing", type=float, help="stylegan style-mixing probability (default 0.9)")
    a("--g-width", type=int, help="generator width at its last layer (pytorch/examples ngf)")
    a("--d-width", type=int, help="discriminator width at its first layer (ndf)")
    a("--latent-dim", type=int, help="size of z (default 100)")
    a("--w-dim", type=int, help="stylegan: size of w (default 128)")
    a("--spectral-norm", action="store_true", default=None, help="spectral norm in D")
    a(
        "--g-cond",
        help="cgan: concat (label embedding joined to z) | cbn (class-conditional BatchNorm)",
    )
    a("--d-norm", help="batch | none: normalisation in the DCGAN/cGAN discriminator")
    a("--device", help="auto | cpu | cuda (auto: cuda when available, with bf16 AMP)")
    a("--precision", help="auto | fp32 | bf16")
    a("--channels-last", action="store_true", default=None, help="channels-last memory format")
    a("--sample-every", type=int, help="steps between sample grids (default 100)")
    a("--ckpt-every", type=int, help="steps between checkpoints (default 250)")
    a("--eval-every", type=int,
      help="steps between FD-classifier evaluations (keeps checkpoints/best.pt); 0 = off; "
      "default 250 on digits, off elsewhere")  # fmt: skip
    a("--log-every", type=int, help="steps between metrics.jsonl records (default 10)")
    a("--keep", type=int, help="number of step checkpoints kept (default 3)")
    a("--num-workers", type=int, help="DataLoader workers for on-disk datasets (default 0)")
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
    args = build_parser().parse_args(argv)
    configure_logging(args)
    options = vars(args)
    options.pop("verbose"), options.pop("quiet")
    out, resume, progress = options.pop("out"), options.pop("resume"), options.pop("progress")
    try:
        from training.trainer import train

        result = train(options, out, resume=resume, progress=progress, make_eval_fn=online_fd)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    print(f"trained {result.step}/{result.total_steps} steps; run directory {result.run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
