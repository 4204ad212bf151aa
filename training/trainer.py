"""The training loop: one adversarial step that reads like the algorithm, and the bookkeeping around
it (data order, EMA generator, checkpoints, samples, metrics, resume).

The step (:meth:`Trainer.train_step`) is pytorch/examples' DCGAN step: D on real, D on fake, step D;
G against D, step G. Losses, penalties and stabilisers are functions from :mod:`training.losses`.

Reproducibility: model init is seeded by ``torch.manual_seed(seed)``; every later random draw (latents,
labels, instance noise, style mixing, StyleGAN noise, interpolation weights) comes from one
``torch.Generator`` on the training device whose state is checkpointed; the data order of epoch ``e``
is a permutation drawn from a generator seeded by ``(seed, e)``, so resuming mid-epoch needs only the
number of batches consumed. A seeded CPU run, stopped and resumed, is bit-identical to an
uninterrupted one.

Under torchrun the same loop runs on every rank (:mod:`training.distributed`): each rank trains on
its share of the global batch, averages gradients before each optimiser step, and rank 0 alone
writes the run directory.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import math
import platform
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from training import budget as B
from training import distributed, recipe, viz
from training import losses as L
from training.augment import ADA_RUN_FRACTION, AdaptiveAugment, DiffAugment
from training.checkpoint import (
    CKPT_DIR,
    CONFIG_NAME,
    checkpoint_path,
    latest_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    read_run_config,
    save_checkpoint,
)
from training.config import MODEL_KINDS, ModelConfig, write_json_atomic
from training.datasets import GanDataset, load_dataset
from training.distributed import Dist
from training.errors import TrainingDiverged, UserError
from training.models import build_models
from training.models.code import latent_code, with_code
from training.train_config import (
    RESUMABLE_OVERRIDES,
    TrainConfig,
    facts_for,
    resolve_with_recipe,
    validate_train_config,
)

log = logging.getLogger(__name__)
EvalFn = Callable[[nn.Module, int], dict[str, Any]]
BEST_KEY = "fd_classifier"
METRICS_NAME = "metrics.jsonl"
UNPLANNED = 10**9  # the length of a --minutes run until its plan is made


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError(
            "--device cuda was requested but no CUDA device is available; use auto or cpu"
        )
    return torch.device(recipe.resolve_device(name))


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for a run, or None for plain fp32."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    # bf16 needs no loss scaling (same exponent range as fp32), so AMP stays correct with the
    # penalties' double backward; GPUs without bf16 train in fp32.
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


class BatchStream:
    """Batches in a reproducible order: epoch ``e`` is a permutation seeded by ``(seed, e)``;
    ``position`` (batches consumed) is all a checkpoint needs to resume mid-epoch. Under torchrun
    each rank reads its slice of every global batch of that one permutation, so N processes
    train on the images, in the order, that one process would."""

    def __init__(
        self, dataset: GanDataset, batch_size: int, seed: int, device, num_workers=0,
        dist: Dist | None = None,
    ):  # fmt: skip
        self.dist = dist or Dist()
        if batch_size > len(dataset):
            per_rank = ""
            if self.dist.enabled:
                shard, local = len(dataset) // self.dist.world, batch_size // self.dist.world
                per_rank = f" (a batch of {local} per rank from a shard of {shard})"
            raise UserError(
                f"batch size {batch_size} is larger than the dataset ({len(dataset)} training "
                f"images in {dataset.name!r}){per_rank}; use --batch-size {len(dataset)} or less"
            )
        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed
        self.device, self.num_workers = device, num_workers
        self.batches_per_epoch = len(dataset) // batch_size
        self.tensors = dataset.as_tensors() if dataset.in_memory else None
        self.position = 0
        self._epoch: int | None = None
        self._iter: Iterator | None = None

    def _permutation(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(len(self.dataset), generator=g)

    def _batch_indices(self, epoch: int, offset: int) -> list[list[int]]:
        perm = self._permutation(epoch)[: self.batches_per_epoch * self.batch_size]
        rows = perm.view(self.batches_per_epoch, self.batch_size)[offset:]
        return self.dist.shard(rows.T).T.tolist()

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, offset = divmod(self.position, self.batches_per_epoch)
        if self.tensors is not None:
            perm = self._permutation(epoch) if self._epoch != epoch else self._perm
            self._epoch, self._perm = epoch, perm
            idx = self.dist.shard(perm[offset * self.batch_size : (offset + 1) * self.batch_size])
            x, y = self.tensors[0][idx], self.tensors[1][idx]
        else:
            if self._epoch != epoch or self._iter is None:
                from torch.utils.data import DataLoader

                loader = DataLoader(
                    self.dataset,
                    batch_sampler=self._batch_indices(epoch, offset),
                    num_workers=self.num_workers,
                )
                self._epoch, self._iter = epoch, iter(loader)
            try:
                x, y = next(self._iter)
            except Exception as e:
                raise UserError(
                    f"cannot read a training image from {self.dataset.name!r}: "
                    f"{e.__class__.__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
                ) from None
        self.position += 1
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


@torch.no_grad()
def update_ema(G_ema: nn.Module, G: nn.Module, beta: float) -> None:
    """G_ema <- beta * G_ema + (1 - beta) * G for weights; buffers (BN stats, w_avg) copied."""
    ema_p = [p for p in G_ema.parameters()]
    cur_p = [p.detach() for p in G.parameters()]
    torch._foreach_lerp_(ema_p, cur_p, 1.0 - beta)
    for b_ema, b in zip(G_ema.buffers(), G.buffers()):
        b_ema.copy_(b)


def versions() -> dict[str, str]:
    import importlib.metadata as md

    import numpy
    import torchvision

    try:
        ganforge = md.version("ganforge")
    except md.PackageNotFoundError:
        ganforge = "unknown"
    return {
        "ganforge": ganforge,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
    }


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    total_steps: int
    checkpoint: Path | None
    best: dict[str, Any] | None


class Trainer:
    """Owns models, optimisers, data and the run directory of one training run."""

    def __init__(
        self,
        cfg: TrainConfig,
        model_cfg: ModelConfig,
        dataset: GanDataset,
        run_dir: Path,
        eval_fn: EvalFn | None = None,
        progress: bool | None = None,
        dist: Dist | None = None,
        budget: B.TimeBudget | None = None,
        given: set[str] | frozenset[str] = frozenset(),
    ):
        self.cfg, self.model_cfg, self.dataset = cfg, model_cfg, dataset
        # --minutes: the length is planned by fit() once the first steps are timed.
        self.budget = budget if cfg.minutes is not None else None
        self.given = set(given)  # options the user set (a plan leaves them alone)
        self.plan: dict[str, Any] | None = None
        self.costs = B.OutputCosts()
        self._measure_from: tuple[int, float, float] | None = None  # (step, seconds, elapsed)
        self._revised_at: list[tuple[int, float]] = []  # (step, train seconds) of revisions
        self.run_dir = Path(run_dir)
        self.eval_fn = eval_fn
        self.progress = progress
        self.dist = d = dist or Dist()
        self.device = (
            distributed.device_for(d, cfg.device) if d.enabled else pick_device(cfg.device)
        )
        self.amp_dtype = autocast_dtype(cfg.precision, self.device)
        self.loss = L.get_loss(cfg.loss)
        self.augment = DiffAugment(cfg.augment, cfg.xflip)
        self.ada = AdaptiveAugment(cfg.ada_target, cfg.ada_kimg or 1.0, cfg.batch_size)
        self.data = BatchStream(
            dataset, cfg.batch_size, cfg.seed, self.device, cfg.num_workers, dist=d
        )
        self.total_steps = cfg.total_steps(len(dataset))
        self.kind = model_cfg.kind
        self.conditional = model_cfg.conditional

        torch.manual_seed(cfg.seed)  # model init; everything later uses self.gen
        G, D = build_models(model_cfg)
        memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        self.G = G.to(self.device, memory_format=memory_format).train()
        self.D = D.to(self.device, memory_format=memory_format).train()
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        if d.enabled:  # BatchNorm over the global batch; G_ema (eval only) keeps plain BatchNorm
            self.G = distributed.convert_batchnorm(self.G)
            self.D = distributed.convert_batchnorm(self.D)
            for module in (self.G, self.D, self.G_ema):  # the same start on every rank
                d.broadcast_module(module)
        self.opt_G = self._adam(self.G, cfg.lr)
        self.opt_D = self._adam(self.D, cfg.lr_d or cfg.lr)
        # One generator, the same on every rank, for the draws the step makes per sample of the
        # global batch; DiffAugment and the gradient penalty draw from rank_gen (per rank, reseeded
        # from (seed, rank, step) every step, so it needs no checkpoint). One process: both are one.
        self.gen = torch.Generator(device=self.device).manual_seed(cfg.seed)
        self.rank_gen = torch.Generator(device=self.device) if d.enabled else self.gen
        self.step = 0
        self.train_seconds = 0.0
        self.best: dict[str, Any] | None = None
        self.last_record: dict[str, Any] = {}
        self.fixed_z, self.fixed_labels = self._fixed_latents()

    # --- setup helpers --------------------------------------------------------------------
    def _adam(self, module: nn.Module, lr: float) -> torch.optim.Optimizer:
        # Fused Adam updates all tensors in one kernel: measurably faster on CPU and CUDA.
        return torch.optim.Adam(
            module.parameters(), lr=lr, betas=(self.cfg.beta1, self.cfg.beta2), fused=True
        )

    def _fixed_latents(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Latents for sample grids: the same every time so grids show progress, not luck."""
        g = torch.Generator().manual_seed(self.cfg.seed + 12345)
        code = self.model_cfg.latent_code
        if self.conditional:
            rows, cols = self.model_cfg.num_classes, 8
            labels = torch.arange(rows).repeat_interleave(cols)
        else:
            rows, cols = (code, 8) if code else (8, 8)
            labels = None
        z = torch.randn(rows * cols, self.model_cfg.latent_dim, generator=g)
        if code:  # one row per value of the InfoGAN code
            z = with_code(z, torch.arange(rows).repeat_interleave(cols), code)
        self.grid_cols = cols
        return z.to(self.device), None if labels is None else labels.to(self.device)

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    # --- the adversarial step ---------------------------------------------------------------
    def D_call(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        logits = self.D(x, labels) if self.conditional else self.D(x)
        return logits.float()  # losses in fp32 even under bf16 autocast

    def randn(self, *shape: int) -> torch.Tensor:
        """Normal noise for this rank's slice of the global batch (``shape[0]`` = global size)."""
        return self.dist.shard(torch.randn(shape, device=self.device, generator=self.gen))

    def sample_latents(self, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """z (and labels) for this rank's slice of a global batch of ``n``."""
        code = self.model_cfg.latent_code
        if code and self.cfg.mode_seeking > 0:  # pairs (i, i + n/2) share a code: see g_step
            z = torch.randn(n, self.model_cfg.latent_dim, device=self.device, generator=self.gen)
            z = torch.cat(
                [z[: n // 2], with_code(z[n // 2 :], latent_code(z[: n // 2], code), code)]
            )
            return self.dist.shard(z), None
        z = self.randn(n, self.model_cfg.latent_dim)
        if not self.conditional:
            return z, None
        labels = torch.randint(
            self.model_cfg.num_classes, (n,), device=self.device, generator=self.gen
        )
        if self.cfg.mode_seeking > 0:  # pairs (i, i + n/2) share a class: see g_step
            labels = torch.cat([labels[: n // 2], labels[: n // 2]])
        return z, self.dist.shard(labels)

    def generate(self, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """Training-time forward of G (StyleGAN-lite: style mixing, fresh noise, w_avg tracking)."""
        if self.kind == "stylegan":
            return self._stylegan_forward(z, labels)
        return self.G(z, labels) if self.conditional else self.G(z)

    def _stylegan_forward(self, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        G, num_ws, gen = self.G, self.model_cfg.num_ws, self.gen
        n = z.shape[0] * self.dist.world  # the global batch: draws are made for it, then sliced
        w = G.mapping(z, labels)
        G.mapping.update_w_avg(w)
        ws = w[:, None, :].expand(-1, num_ws, -1)
        if self.cfg.style_mixing > 0:
            # Style-mixing regularisation: from a random layer on, use a second latent's w.
            z2 = self.randn(n, *z.shape[1:])
            code = self.model_cfg.latent_code
            if code:  # the second latent keeps the first one's code: one code per image
                z2 = with_code(z2, latent_code(z, code), code)
            w2 = G.mapping(z2, labels)
            cutoff = torch.randint(1, num_ws, (n,), device=self.device, generator=gen)
            mix = torch.rand(n, device=self.device, generator=gen) < self.cfg.style_mixing
            cutoff, mix = self.dist.shard(cutoff), self.dist.shard(mix)
            cutoff = torch.where(mix, cutoff, torch.full_like(cutoff, num_ws))
            later = torch.arange(num_ws, device=self.device)[None, :] >= cutoff[:, None]
            ws = torch.where(later[:, :, None], w2[:, None, :], ws)
        noise = [self.dist.shard(t) for t in G.synthesis.sample_noise(n, generator=gen)]
        return G.synthesis(ws, noise)

    def noisy(self, x: torch.Tensor) -> torch.Tensor:
        """Instance noise (:func:`training.losses.instance_noise`), drawn for the global batch."""
        sigma = self.cfg.instance_noise * max(0.0, 1.0 - self.step / self.total_steps)
        if sigma <= 0:
            return x
        return x + sigma * self.randn(x.shape[0] * self.dist.world, *x.shape[1:]).to(x.dtype)

    def augmented(self, x: torch.Tensor) -> torch.Tensor:
        """An image, real or fake, through DiffAugment's fixed policies, then ADA's (when on)."""
        if self.augment:
            x = self.augment(x, self.rank_gen)
        return self.ada(x, self.rank_gen) if self.ada else x

    def d_input(self, x: torch.Tensor) -> torch.Tensor:
        """What D sees of an image, real or fake: augmented, then instance noise."""
        return self.noisy(self.augmented(x))

    def d_penalty(self, real, labels, fake, fake_labels) -> tuple[torch.Tensor | None, str]:
        """The discriminator regulariser this run uses at this step (WGAN-GP, lazy R1 or none)."""
        if self.cfg.loss == "wgan-gp":
            # Interpolates carry the real labels (a cGAN critic needs one label per image).
            gp = L.gradient_penalty(lambda x: self.D_call(x, labels), real, fake, self.rank_gen)
            return self.cfg.gp_weight * gp, "gp"
        if self.cfg.r1_gamma > 0 and self.step % self.cfg.r1_every == 0:
            # On the images D is trained on (augmented, as StyleGAN2-ADA does).
            real = self.augmented(real).detach()
            real = real.requires_grad_(True)
            r1 = L.r1_penalty(self.D_call(real, labels), real)
            # Lazy regularisation: applied every r1_every steps, scaled up to compensate.
            return 0.5 * self.cfg.r1_gamma * self.cfg.r1_every * r1, "r1"
        return None, ""

    def D_fake(self, fake, fake_labels, z) -> tuple[torch.Tensor, torch.Tensor | None]:
        """D's logits on (what D sees of) fake images, and with ``latent_code`` the InfoGAN
        code loss: cross-entropy of D's code head against the code G was given."""
        x = self.d_input(fake)
        if not self.model_cfg.latent_code:
            return self.D_call(x, fake_labels), None
        logits, code_logits = self.D.forward_with_code(x)
        code = latent_code(z, self.model_cfg.latent_code)
        return logits.float(), F.cross_entropy(code_logits.float(), code)

    def d_step(self, real, labels, fake, fake_labels, z) -> dict[str, torch.Tensor]:
        """One discriminator update: D on real, D on fake (detached), step D."""
        with self.autocast():
            real_logits = self.D_call(self.d_input(real), labels)
            fake_logits, code_loss = self.D_fake(fake, fake_labels, z)
            loss_D = self.loss.d_loss(real_logits, fake_logits, self.cfg.label_smoothing)
        penalty, name = self.d_penalty(real, labels, fake, fake_labels)
        self.opt_D.zero_grad(set_to_none=True)
        total = loss_D if penalty is None else loss_D + penalty
        if code_loss is not None:
            total = total + self.cfg.code_weight * code_loss
        total.backward()
        self.dist.average_grads(self.D)
        self.opt_D.step()
        stats = {
            "loss_D": loss_D.detach(),
            "D_real": real_logits.detach().float().mean(),
            "D_fake": fake_logits.detach().float().mean(),
        }
        if penalty is not None:
            stats[name] = penalty.detach()
        if code_loss is not None:
            stats["loss_code"] = code_loss.detach()
        if self.ada:  # ADA's overfitting signal r_t
            stats["D_real_sign"] = real_logits.detach().sign().mean()
        return stats

    def g_step(self, fake, fake_labels, z) -> dict[str, torch.Tensor]:
        """One generator update: G against the (just updated) D, step G."""
        L.requires_grad(self.D, False)  # D's weight grads are not needed here
        with self.autocast():
            fake_logits, code_loss = self.D_fake(fake, fake_labels, z)
            loss_G = self.loss.g_loss(fake_logits)
        loss = loss_G
        if code_loss is not None:
            loss = loss + self.cfg.code_weight * code_loss
        if self.cfg.mode_seeking > 0:
            loss = loss + self.cfg.mode_seeking * L.mode_seeking(fake.float(), z)
        self.opt_G.zero_grad(set_to_none=True)
        loss.backward()
        self.dist.average_grads(self.G)
        self.opt_G.step()
        L.requires_grad(self.D, True)
        return {"loss_G": loss_G.detach()}

    def train_step(self) -> dict[str, float]:
        """D on real, D on fake, step D (n_critic times); G against D, step G; update G_ema."""
        n = self.cfg.batch_size  # global; each rank generates and sees its slice
        if self.dist.enabled:
            self.rank_gen.manual_seed(
                (self.cfg.seed * 1_000_003 + self.step) * 65_537 + self.dist.rank
            )
        for i in range(self.cfg.n_critic):
            real, labels = self.data.next()
            if self.cfg.channels_last:
                real = real.contiguous(memory_format=torch.channels_last)
            # Only the last fake batch is reused by the G step, so only it keeps G's graph.
            with torch.set_grad_enabled(i == self.cfg.n_critic - 1), self.autocast():
                z, fake_labels = self.sample_latents(n)
                fake = self.generate(z, fake_labels)
            stats = self.d_step(real, labels, fake.detach(), fake_labels, z)
        stats.update(self.g_step(fake, fake_labels, z))
        self.step += 1
        self.dist.average_buffers(self.G)
        update_ema(self.G_ema, self.G, self.ema_beta())
        stats = {k: float(v) for k, v in self.dist.average_stats(stats).items()}
        if self.ada:  # every rank sees the same global mean, so p stays the same everywhere
            self.ada.speed_kimg = self.cfg.ada_kimg or ADA_RUN_FRACTION * self.run_kimg()
            self.ada.observe(stats["D_real_sign"])
            stats["ada_p"] = self.ada.p
        return stats

    def run_kimg(self) -> float:
        """The run's planned length in thousands of real images."""
        return self.total_steps * self.cfg.batch_size * self.cfg.n_critic / 1000

    def ema_beta(self) -> float:
        images = self.step * self.cfg.batch_size
        half_life = self.cfg.ema_kimg * 1000
        if self.cfg.ema_rampup is not None:
            half_life = min(half_life, images * self.cfg.ema_rampup)
        return 0.5 ** (self.cfg.batch_size / max(half_life, 1e-8))

    # --- state ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "G": self.G.state_dict(),
            "G_ema": self.G_ema.state_dict(),
            "D": self.D.state_dict(),
            "opt_G": self.opt_G.state_dict(),
            "opt_D": self.opt_D.state_dict(),
            "step": self.step,
            "rng": {"generator": self.gen.get_state(), "torch": torch.get_rng_state()},
            "data_position": self.data.position,
            "train_seconds": self.train_seconds,
            "best": dict(self.best) if self.best else None,
            "ada": {"p": self.ada.p, "signs": list(self.ada._signs)},
        }

    def load_state_dict(self, state: dict[str, Any], path: Path) -> None:
        try:
            self.G.load_state_dict(state["G"])
            self.G_ema.load_state_dict(state["G_ema"])
            self.D.load_state_dict(state["D"])
            self.opt_G.load_state_dict(state["opt_G"])
            self.opt_D.load_state_dict(state["opt_D"])
            self.gen.set_state(state["rng"]["generator"])
            torch.set_rng_state(state["rng"]["torch"])
            self.step = int(state["step"])
            self.data.position = int(state["data_position"])
        except (KeyError, RuntimeError, ValueError, TypeError) as e:
            raise UserError(
                f"checkpoint {str(path)!r} cannot resume this run ({e.__class__.__name__}: "
                f"{str(e)[:300]})"
            ) from None
        self.train_seconds = float(state.get("train_seconds", 0.0))
        ada = state.get("ada") or {}
        self.ada.p, self.ada._signs = float(ada.get("p", 0.0)), list(ada.get("signs", []))
        self.best = state.get("best")

    def save(self, wait: bool = True) -> Path:
        """Write ``ckpt-STEP.pt`` (rank 0; the other ranks wait for it unless ``wait`` is off)."""
        self._check_finite_weights()
        path = checkpoint_path(self.run_dir, self.step)
        if self.dist.is_main:
            save_checkpoint(path, self.state_dict())
            prune_checkpoints(self.run_dir, self.cfg.keep)
        if wait:
            self.dist.barrier()
        return path

    def _check_finite_weights(self) -> None:
        for name, module in (("G", self.G), ("D", self.D)):
            for p in module.parameters():
                if not torch.isfinite(p).all():
                    raise self._diverged(f"{name} weights are no longer finite")

    def _diverged(self, what: str) -> TrainingDiverged:
        ckpts = sorted((self.run_dir / CKPT_DIR).glob("ckpt-*.pt"))
        kept = (
            f"the last good checkpoint is {str(ckpts[-1])!r}"
            if ckpts
            else "no checkpoint was saved"
        )
        return TrainingDiverged(
            f"training diverged at step {self.step}: {what}; stopped, {kept}. "
            "Try a lower --lr, --loss hinge or --spectral-norm"
        )

    # --- outputs ----------------------------------------------------------------------------
    @torch.no_grad()
    def write_samples(self) -> None:
        if not self.dist.is_main:
            return
        images = self._sample_fixed()
        viz.save_grid(
            images, self.run_dir / "samples" / f"grid-{self.step:08d}.png", self.grid_cols
        )
        if self.kind == "stylegan":
            viz.save_style_mixing(
                self.G_ema,
                self.run_dir / "samples" / f"mix-{self.step:08d}.png",
                seed=self.cfg.seed,
            )

    @torch.no_grad()
    def _sample_fixed(self) -> torch.Tensor:
        G = self.G_ema
        out = []
        for i in range(0, len(self.fixed_z), 64):
            z = self.fixed_z[i : i + 64]
            if self.conditional:
                out.append(G(z, self.fixed_labels[i : i + 64]))
            else:
                out.append(G(z))
        return torch.cat(out).float().cpu()

    def log(self, record: dict[str, Any]) -> None:
        if not self.dist.is_main:
            return
        with open(self.run_dir / METRICS_NAME, "a") as f:
            f.write(json.dumps(record) + "\n")

    def evaluate(self) -> None:
        if self.eval_fn is None or not self.dist.is_main:
            return
        result = self.eval_fn(self.G_ema, self.step)
        self.log({"step": self.step, "kimg": self.kimg(), "eval": result})
        if "line" in result:  # the figures beside the gate's rules: would more time help?
            log.info("step %d (%.1f kimg): %s", self.step, self.kimg(), result["line"])
        score = result.get(BEST_KEY)
        if score is None or not math.isfinite(score):
            return
        if self.best is None or score < self.best["value"]:
            self.best = {"key": BEST_KEY, "value": float(score), "step": self.step}
            self._check_finite_weights()
            save_checkpoint(self.run_dir / CKPT_DIR / "best.pt", self.state_dict())

    def kimg(self) -> float:
        return self.step * self.cfg.batch_size * self.cfg.n_critic / 1000

    def _truncate_metrics(self) -> None:
        """After a resume, drop records logged after the checkpoint (they will be redone)."""
        p = self.run_dir / METRICS_NAME
        if not p.is_file() or not self.dist.is_main:
            return
        keep = []
        for line in p.read_text().splitlines():
            try:
                if json.loads(line)["step"] <= self.step:
                    keep.append(line)
            except (json.JSONDecodeError, KeyError, TypeError):
                continue  # a line cut short by a crash
        tmp = p.with_name(f".{p.name}.tmp")
        tmp.write_text("".join(line + "\n" for line in keep))
        tmp.replace(p)

    # --- the loop ---------------------------------------------------------------------------
    def fit(self, stop_at: int | None = None) -> TrainResult:
        """Train until the configured length (or ``stop_at`` steps, as if interrupted there)."""
        from tqdm import tqdm

        if self.budget is not None:  # nothing ends before the plan is made
            self.total_steps = self.step + UNPLANNED
        end = self.total_steps if stop_at is None else min(stop_at, self.total_steps)
        tty = sys.stderr.isatty()
        show = (tty if self.progress is None else self.progress) and self.dist.is_main
        bar = tqdm(
            total=None if self.budget is not None else self.total_steps,
            initial=self.step,
            disable=not show,
            unit="step",
            dynamic_ncols=True,
            desc=self.run_dir.name,
        )
        if self.step == 0:
            self.write_samples()
        sums: dict[str, float] = {}
        count, t_log = 0, time.perf_counter()
        last_ckpt: Path | None = None
        try:
            while self.step < end:
                t0 = time.perf_counter()
                stats = self.train_step()
                self.train_seconds += time.perf_counter() - t0
                bad = [k for k, v in stats.items() if not math.isfinite(v)]
                if bad:
                    raise self._diverged(f"{bad[0]} became {stats[bad[0]]}")
                for k, v in stats.items():
                    sums[k] = sums.get(k, 0.0) + v
                count += 1
                bar.update(1)
                if self.budget is not None:
                    self.follow_budget(bar)
                    end = self.total_steps if stop_at is None else min(stop_at, self.total_steps)
                if self.step % self.cfg.log_every == 0 or self.step == end:
                    now = time.perf_counter()
                    rate = count * self.cfg.batch_size * self.cfg.n_critic / (now - t_log)
                    means = {k: v / count for k, v in sums.items()}
                    record = {"step": self.step, "kimg": round(self.kimg(), 3), **means}
                    record["img_per_s"] = round(rate, 1)
                    record["train_seconds"] = round(self.train_seconds, 2)
                    self.log(record)
                    self.last_record = record
                    postfix = {"D": f"{means['loss_D']:.3f}", "G": f"{means['loss_G']:.3f}"}
                    postfix["img_s"] = f"{rate:.0f}"
                    if self.ada:
                        postfix["p"] = f"{self.ada.p:.2f}"
                    if self.budget is not None:
                        postfix["left"] = B.format_seconds(self.budget.left())
                    bar.set_postfix(postfix)
                    sums, count, t_log = {}, 0, now
                if self.step % self.cfg.sample_every == 0 or self.step == self.total_steps:
                    self._timed("samples", self.write_samples)
                    if not show and self.dist.is_main:
                        log.info(self._status_line())
                if self.cfg.eval_every and (
                    self.step % self.cfg.eval_every == 0 or self.step == self.total_steps
                ):
                    self._timed("evaluation", self.evaluate)
                if self.step % self.cfg.ckpt_every == 0 or self.step == end:
                    last_ckpt = self._timed("checkpoint", self.save)
        except KeyboardInterrupt:
            bar.close()
            if self.step > 0:
                last_ckpt = self.save(wait=False)  # the other ranks are being interrupted too
                if self.dist.is_main:
                    log.warning(
                        "interrupted at step %d; saved %s (continue with --resume)",
                        self.step, last_ckpt,
                    )  # fmt: skip
            raise
        except RuntimeError as e:
            if not (self.dist.enabled and distributed.is_peer_failure(e)):
                raise
            raise distributed.PeerLost(self._peer_lost(e)) from None
        finally:
            bar.close()
        if self.step >= self.total_steps and self.dist.is_main:
            self.write_final_figures()
        if self.plan is not None and self.step >= self.total_steps:
            self.plan["finished"] = {
                "step": self.step,
                "kimg": round(self.kimg(), 3),
                "wall_seconds": round(self.budget.elapsed(), 1),
            }
            self._write_config()
        self.dist.barrier()
        return TrainResult(self.run_dir, self.step, self.total_steps, last_ckpt, self.best)

    def _peer_lost(self, e: RuntimeError) -> str:
        ckpts = sorted((self.run_dir / CKPT_DIR).glob("ckpt-*.pt"))
        resume = f"continue from {str(ckpts[-1])!r} with --resume" if ckpts else "no checkpoint yet"
        return (
            f"rank {self.dist.rank}/{self.dist.world} lost contact with another process of this "
            f"run at step {self.step} ({str(e).splitlines()[0][:160]}); the run stops (torchrun's "
            f"summary names the rank that failed); {resume}"
        )

    # --- the time budget (--minutes) ------------------------------------------------------------
    def _timed(self, cost: str, write: Callable[[], Any]) -> Any:
        """Run an output (samples, evaluation, checkpoint), keeping its cost for the plan."""
        t0 = time.perf_counter()
        result = write()
        setattr(self.costs, cost, time.perf_counter() - t0)
        return result

    def follow_budget(self, bar) -> None:
        """--minutes: plan the length once the first steps are timed, then revise it every
        ~1% of the run from the latest step time. Rank 0 decides; every rank follows."""
        if self.plan is None:
            if self._measure_from is None:  # the first step paid one-off set-up costs
                self._measure_from = (self.step, self.train_seconds, self.budget.elapsed())
                return
            step0, seconds0, elapsed0 = self._measure_from
            steps, seconds = self.step - step0, self.train_seconds - seconds0
            measuring = self.budget.elapsed() - elapsed0
            (done,) = self.dist.broadcast_ints(
                [B.measured_enough(steps, seconds, measuring, self.budget)], self.device
            )
            if done:
                self._make_plan(steps, seconds, self.budget.elapsed() - elapsed0)
                bar.total = self.total_steps
                bar.refresh()
        elif (self.step - self.plan["start_step"]) % self.plan["revise_every"] == 0:
            self._revise_plan()
            bar.total = self.total_steps
            bar.refresh()

    def _make_plan(self, steps: int, seconds: float, measuring: float) -> None:
        step_seconds = seconds / steps
        # What each output costs on this machine, measured now (later ones update it).
        self._timed("samples", self.write_samples)
        if self.eval_fn is not None and self.cfg.eval_every:
            self._timed("evaluation", self.evaluate)
        self._timed("checkpoint", lambda: torch.save(self.state_dict(), io.BytesIO()))
        if self.dist.is_main:
            self._timed("figures", self.write_final_figures)  # rewritten at the end
        current = {k: getattr(self.cfg, k) for k in B.OUTPUTS_PER_RUN}
        left = self.budget.left()
        intervals = B.first_plan_intervals(step_seconds, left, self.costs, current, self.given)
        more = B.steps_that_fit(left, step_seconds, self.costs, intervals)
        if left < measuring + self.costs.final():
            more = -1
        decided = self.dist.broadcast_ints(
            [more, *(intervals[k] for k in B.OUTPUTS_PER_RUN)], self.device
        )
        if decided[0] < 0:
            if self.dist.is_main:
                raise B.too_short(self.cfg.minutes, self.budget.elapsed(), measuring, self.costs)
            raise UserError(f"--minutes {self.cfg.minutes:g} is too short (rank 0 says how long)")
        more, intervals = decided[0], dict(zip(B.OUTPUTS_PER_RUN, decided[1:]))
        for k, v in intervals.items():
            setattr(self.cfg, k, v)
        self._set_length(self.step + more)
        self.plan = {
            "minutes": self.cfg.minutes,
            "start_step": self.step,
            "measured": {
                "steps": steps,
                "step_seconds": round(step_seconds, 5),
                "img_per_s": round(self.cfg.batch_size * self.cfg.n_critic / step_seconds, 1),
                "samples_seconds": round(self.costs.samples, 3),
                "checkpoint_seconds": round(self.costs.checkpoint, 3),
                "evaluation_seconds": round(self.costs.evaluation, 3),
                "figures_seconds": round(self.costs.figures, 3),
                "seconds_before_plan": round(self.budget.elapsed(), 2),
            },
            "planned_steps": self.total_steps,
            "planned_kimg": self.cfg.kimg,
            "intervals": intervals,
            "revise_every": max(1, more // B.REVISIONS),
            "revisions": 0,
        }
        self._revised_at = [(self.step, self.train_seconds)]
        self._write_config()
        if self.dist.is_main:
            log.info(
                "--minutes %g: %.1f ms/step measured; planned %d steps (%.1f kimg)",
                self.cfg.minutes, step_seconds * 1000, self.total_steps, self.cfg.kimg,
            )  # fmt: skip

    def _revise_plan(self) -> None:
        # The step time over the last WINDOW_STEPS or more: recent enough to follow a host
        # that slows down, long enough not to follow one slow step.
        history = self._revised_at
        while len(history) > 1 and self.step - history[1][0] >= B.WINDOW_STEPS:
            history.pop(0)
        step0, seconds0 = history[0]
        step_seconds = (self.train_seconds - seconds0) / max(1, self.step - step0)
        intervals = {k: getattr(self.cfg, k) for k in B.OUTPUTS_PER_RUN}
        more = B.steps_that_fit(self.budget.left(), step_seconds, self.costs, intervals)
        (more,) = self.dist.broadcast_ints([more], self.device)
        self._set_length(self.step + more)
        history.append((self.step, self.train_seconds))
        self.plan["revisions"] += 1

    def _set_length(self, total_steps: int) -> None:
        """The run's length, in steps and (as a resumed run reads it) in kimg."""
        self.total_steps = total_steps
        self.cfg.kimg = total_steps * self.cfg.batch_size * self.cfg.n_critic / 1000
        self.cfg.epochs = None

    def _write_config(self) -> None:
        """Rewrite config.json with the current train settings and the plan (rank 0)."""
        if not self.dist.is_main:
            return
        path = self.run_dir / CONFIG_NAME
        config = json.loads(path.read_text())
        config["train"] = self.cfg.to_dict()
        config["plan"] = self.plan
        write_json_atomic(path, config)

    def _status_line(self) -> str:
        parts = [f"step {self.step}/{self.total_steps}", f"kimg {self.kimg():.1f}"]
        for k in ("loss_D", "loss_G"):
            if k in self.last_record:
                parts.append(f"{k} {self.last_record[k]:.3f}")
        if "img_per_s" in self.last_record:
            parts.append(f"{self.last_record['img_per_s']:.0f} img/s")
        if self.ada:
            parts.append(f"ADA p {self.ada.p:.2f}")
        if self.budget is not None:
            parts.append(f"{B.format_seconds(self.budget.left())} left")
        return " ".join(parts)

    def write_final_figures(self) -> None:
        viz.plot_losses(self.run_dir / METRICS_NAME, self.run_dir / "loss.png")
        grids = sorted((self.run_dir / "samples").glob("grid-*.png"))
        viz.make_gif(grids, self.run_dir / "progress.gif")


def prepare_run(
    options: dict[str, Any], out: Path, dist: Dist | None = None
) -> tuple[TrainConfig, ModelConfig, GanDataset, dict[str, Any]]:
    """Validate a new run (options, output folder, dataset, model shape) before anything is
    written. The recipe (training/recipe.py) fills what the options (None = not given) leave
    open, from the dataset's facts; the last value returned is its record for config.json."""
    dist = dist or Dist()
    given = {k: v for k, v in options.items() if v is not None}
    B.check_minutes(given.get("minutes"), given.get("kimg"), given.get("epochs"))
    if given.get("model", "dcgan") not in MODEL_KINDS:
        raise UserError(f"unknown model {given['model']!r}; choose one of {', '.join(MODEL_KINDS)}")
    out = Path(out)
    # Rank 0 owns the folder (the others would see it appear while it writes config.json).
    if dist.is_main and out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(
            f"output directory {str(out)!r} already exists and is not empty; "
            "pass --resume to continue that run or choose another --out"
        )
    defaults = TrainConfig()
    dataset = load_dataset(
        given.get("dataset", defaults.dataset),
        given.get("resolution", defaults.resolution),
        "train",
        given.get("data_root"),
    )
    cfg, model_kwargs, record = resolve_with_recipe(options, dist.world, facts_for(given, dataset))
    conditional = cfg.model == "cgan"
    model_cfg = ModelConfig(
        kind=cfg.model,
        resolution=cfg.resolution,
        channels=dataset.channels,
        num_classes=dataset.num_classes if conditional else 0,
        class_names=dataset.class_names if conditional else [],
        **model_kwargs,
    )
    return cfg, model_cfg, dataset, record


def train(
    options: dict[str, Any],
    out: str | Path,
    resume: bool = False,
    eval_fn: EvalFn | None = None,
    progress: bool | None = None,
    stop_at: int | None = None,
    make_eval_fn: Callable[[TrainConfig], EvalFn | None] | None = None,
    started: float | None = None,
) -> TrainResult:
    """Train (or resume) a run in ``out`` from user options (None values = not given).

    ``eval_fn(G_ema, step) -> dict`` runs every ``eval_every`` steps (best.pt by its
    "fd_classifier"); or ``make_eval_fn(cfg)`` builds it once the run's config is known.
    A ``minutes`` budget counts from ``started`` (``time.monotonic()``; default: now).
    Under torchrun every rank calls this; ``--batch-size`` is the global batch."""
    d = distributed.env_world()
    run = _Run(eval_fn, progress, stop_at, make_eval_fn, started or time.monotonic())
    try:
        if resume:
            return _resume(d, options, Path(out), run)
        return _new_run(d, options, Path(out), run)
    finally:
        distributed.shutdown(d)


@dataclass
class _Run:
    """How train() was called, beyond the options (passed on to _new_run / _resume)."""

    eval_fn: EvalFn | None
    progress: bool | None
    stop_at: int | None
    make_eval_fn: Callable[[TrainConfig], EvalFn | None] | None
    started: float

    def trainer(self, cfg, model_cfg, dataset, out, d: Dist, given) -> Trainer:
        eval_fn = self.eval_fn
        if eval_fn is None and self.make_eval_fn is not None and d.is_main:
            eval_fn = self.make_eval_fn(cfg)
        budget = B.TimeBudget(cfg.minutes * 60, self.started) if cfg.minutes else None
        return Trainer(cfg, model_cfg, dataset, out, eval_fn, self.progress, d, budget, given)


def _start(d: Dist, cfg: TrainConfig) -> None:
    """Refuse set-ups that cannot work, then join the process group (torchrun only)."""
    distributed.check_setup(d, cfg.batch_size, cfg.device)
    distributed.init(d, distributed.device_for(d, cfg.device) if d.enabled else torch.device("cpu"))


def _resume(d, options, out, run: _Run) -> TrainResult:
    # Every rank reads the run directory (multi-node: it must be on a shared filesystem).
    saved = read_run_config(out) if (out / CONFIG_NAME).is_file() else None
    if saved is None:
        raise UserError(f"--resume: {str(out)!r} is not a run directory (no {CONFIG_NAME})")
    cfg = TrainConfig.from_dict(saved["train"])
    given = {k: v for k, v in options.items() if v is not None}
    model_d = saved["model"]
    conflicts = []
    for k, v in given.items():
        current = getattr(cfg, k) if hasattr(cfg, k) else model_d.get(k)
        if k not in RESUMABLE_OVERRIDES and current != v:
            conflicts.append(f"--{k.replace('_', '-')} {v} (run has {current})")
    if conflicts:
        raise UserError(
            "cannot change these settings when resuming "
            f"{str(out)!r}: {', '.join(conflicts)}; start a new run with another --out"
        )
    for k in RESUMABLE_OVERRIDES & set(given):
        setattr(cfg, k, given[k])
    B.check_minutes(given.get("minutes"), given.get("kimg"), given.get("epochs"))
    if "kimg" in given and "epochs" not in given:
        cfg.epochs = None
    if "minutes" not in given:  # a budget is spent once; a plain resume goes to the planned kimg
        cfg.minutes = None
    validate_train_config(cfg, d.world)
    _start(d, cfg)
    model_cfg = ModelConfig.from_dict(model_d)
    dataset = load_dataset(cfg.dataset, cfg.resolution, "train", cfg.data_root)
    user_set = set(saved.get("given", [])) | set(given)
    trainer = run.trainer(cfg, model_cfg, dataset, out, d, user_set)
    ckpt = latest_checkpoint(out)
    trainer.load_state_dict(load_checkpoint(ckpt), ckpt)
    d.barrier()  # every rank has read the checkpoint before rank 0 writes anything
    trainer._truncate_metrics()
    if d.is_main:
        config = {**saved, "train": cfg.to_dict(), "distributed": d.describe()}
        config["given"] = sorted(user_set)
        write_json_atomic(out / CONFIG_NAME, config)
    return trainer.fit(run.stop_at)


def _new_run(d, options, out, run: _Run) -> TrainResult:
    cfg, model_cfg, dataset, record = prepare_run(options, out, d)
    _start(d, cfg)
    given = {k for k, v in options.items() if v is not None}
    trainer = run.trainer(cfg, model_cfg, dataset, out, d, given)  # checks data vs batch
    d.barrier()  # every rank is set up before rank 0 creates the run directory
    if not d.is_main:
        return trainer.fit(run.stop_at)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    config = {
        "model": model_cfg.to_dict(),
        "train": cfg.to_dict(),
        "dataset": dataset.describe(),
        "distributed": d.describe(),
        "versions": versions(),
        "given": sorted(given),  # the options the user set; the rest are defaults
        "recipe": record,  # the dataset's facts and where each chosen setting came from
    }
    try:
        write_json_atomic(out / CONFIG_NAME, config)
        return trainer.fit(run.stop_at)
    except (UserError, KeyboardInterrupt):
        # Nothing half-written: a run that failed before its first checkpoint leaves no folder.
        if created and not any((out / CKPT_DIR).glob("ckpt-*.pt")):
            shutil.rmtree(out, ignore_errors=True)
        raise
