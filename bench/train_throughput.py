"""Training-step throughput of ganforge's trainer per model family, beside a textbook DCGAN loop.

    python bench/train_throughput.py [--quick] [--steps N] [--repeats R]

Rows: images/s of one full training step (D on real, D on fake, step D; G against D, step G;
EMA update) per family at resolution 64 and 32, batch 64, on in-memory random images (the data
pipeline is not what is measured), and the peak RSS of a process doing only that. The baseline is
the pytorch/examples dcgan/main.py algorithm written out plainly (64x64, batch 64, ngf = ndf = 64,
nz = 100, BCE on a sigmoid output, Adam 2e-4, betas (0.5, 0.999)). ganforge's dcgan at the same
configuration is timed interleaved with it, repeat by repeat, and compared by medians, because the
machine is shared and noisy. Writes bench/results/train_throughput.json and prints a markdown table.

    python bench/train_throughput.py --ddp [--steps N] [--repeats R]

Data-parallel rows only (merged into the same JSON): ganforge's dcgan at the textbook configuration
(64x64, global batch 64) in one process (1 and 2 threads) and in two torchrun processes (gloo, one
thread each, 32 images per rank), all three timed on the same machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from training.config import write_json_atomic  # noqa: E402

BATCH = 64


# --- the textbook loop (pytorch/examples dcgan/main.py algorithm) ---------------------------
class TextbookG(nn.Module):
    def __init__(self, nz=100, ngf=64, nc=3):
        super().__init__()
        self.main = nn.Sequential(
            nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False),
            nn.BatchNorm2d(ngf * 8),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf * 4),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf * 2),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False),
            nn.Tanh(),
        )

    def forward(self, x):
        return self.main(x)


class TextbookD(nn.Module):
    def __init__(self, ndf=64, nc=3):
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(nc, ndf, 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ndf * 2),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ndf * 4),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ndf * 8),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x):
        return self.main(x)


def _textbook_init(m):
    name = m.__class__.__name__
    if "Conv" in name:
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif "BatchNorm" in name:
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


class TextbookLoop:
    """The example's training step, verbatim in algorithm: BCE, real/fake labels, three D passes."""

    def __init__(self, data: torch.Tensor, nz=100):
        torch.manual_seed(0)
        self.netG, self.netD = TextbookG(nz), TextbookD()
        self.netG.apply(_textbook_init)
        self.netD.apply(_textbook_init)
        self.criterion = nn.BCELoss()
        self.optD = torch.optim.Adam(self.netD.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self.optG = torch.optim.Adam(self.netG.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self.data, self.nz, self.i = data, nz, 0

    def train_step(self):
        real = self.data[(self.i % (len(self.data) // BATCH)) * BATCH :][:BATCH]
        self.i += 1
        b = real.size(0)
        # (1) update D: maximize log(D(x)) + log(1 - D(G(z)))
        self.netD.zero_grad()
        label = torch.full((b,), 1.0)
        output = self.netD(real).view(-1)
        errD_real = self.criterion(output, label)
        errD_real.backward()
        noise = torch.randn(b, self.nz, 1, 1)
        fake = self.netG(noise)
        label.fill_(0.0)
        output = self.netD(fake.detach()).view(-1)
        errD_fake = self.criterion(output, label)
        errD_fake.backward()
        self.optD.step()
        # (2) update G: maximize log(D(G(z)))
        self.netG.zero_grad()
        label.fill_(1.0)
        output = self.netD(fake).view(-1)
        errG = self.criterion(output, label)
        errG.backward()
        self.optG.step()
        return {"loss_D": (errD_real + errD_fake).item(), "loss_G": errG.item()}


# --- ganforge's trainer on the same data -----------------------------------------------------
def ganforge_trainer(kind: str, resolution: int, data: torch.Tensor, dist=None, **options):
    from training.config import ModelConfig
    from training.datasets import GanDataset
    from training.train_config import resolve_options
    from training.trainer import Trainer

    labels = torch.arange(len(data)) % 10
    ds = GanDataset("bench", "train", resolution, data.shape[1], [str(i) for i in range(10)],
                    tensors=(data, labels))  # fmt: skip
    opts = {"model": kind, "resolution": resolution, "batch_size": BATCH, "device": "cpu"}
    if kind == "dcgan" and resolution == 64:
        # The textbook configuration: ngf = ndf = 64, nz = 100, no instance noise.
        opts.update(g_width=64, d_width=64, latent_dim=100, instance_noise=0.0)
    cfg, model_kwargs = resolve_options({**opts, **options})
    classes = 10 if kind == "cgan" else 0
    model_cfg = ModelConfig(kind=kind, resolution=resolution, channels=data.shape[1],
                            num_classes=classes, class_names=[str(i) for i in range(classes)],
                            **model_kwargs)  # fmt: skip
    return Trainer(cfg, model_cfg, ds, Path("/nonexistent-bench-run"), progress=False, dist=dist)


def random_images(resolution: int, n: int = 4 * BATCH, channels: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, channels, resolution, resolution, generator=g) * 2 - 1


def time_steps(loop, steps: int) -> float:
    """Images per second over ``steps`` training steps."""
    t0 = time.perf_counter()
    for _ in range(steps):
        loop.train_step()
    return steps * BATCH / (time.perf_counter() - t0)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def worker(name: str, resolution: int, steps: int, repeats: int, options: dict) -> dict:
    """One configuration alone in this process: median img/s and the process's peak RSS."""
    data = random_images(resolution)
    if name == "textbook":
        loop = TextbookLoop(data)
    else:
        loop = ganforge_trainer(name, resolution, data, **options)
    loop.train_step()  # warm-up: allocations, kernel selection
    rates = [time_steps(loop, steps) for _ in range(repeats)]
    return {"img_per_s": statistics.median(rates), "rates": rates, "peak_rss_mib": peak_rss_mib()}


FAST = {"precision": "bf16", "channels_last": True}


def side_by_side(steps: int, repeats: int, options: dict) -> dict:
    """Textbook vs ganforge dcgan (default fp32, and with FAST options) at 64x64, batch 64,
    interleaved repeat by repeat."""
    data = random_images(64)
    loops = {
        "textbook": TextbookLoop(data),
        "ganforge": ganforge_trainer("dcgan", 64, data, **options),
        "ganforge_fast": ganforge_trainer("dcgan", 64, data, **{**options, **FAST}),
    }
    for loop in loops.values():
        loop.train_step()
    rates: dict[str, list[float]] = {k: [] for k in loops}
    for r in range(repeats):
        # Rotate the order so drifting background load does not favour one side.
        names = list(loops)
        names = names[r % len(names) :] + names[: r % len(names)]
        for name in names:
            rates[name].append(time_steps(loops[name], steps))
    med = {k: statistics.median(v) for k, v in rates.items()}
    result = {f"{k}_img_per_s": v for k, v in med.items()}
    for k in ("ganforge", "ganforge_fast"):
        result[f"{k}_speedup_of_medians"] = med[k] / med["textbook"]
        pairwise = [x / y for x, y in zip(rates[k], rates["textbook"])]
        result[f"{k}_median_pairwise_speedup"] = statistics.median(pairwise)
    result["rates"] = rates
    result["fast_options"] = FAST
    return result


def ddp_worker(steps: int, repeats: int) -> dict | None:
    """The textbook-configuration dcgan on this rank's share of a global batch of 64 (under
    torchrun; a world of one otherwise). Rank 0 returns the global img/s; the others None."""
    from training import distributed

    d = distributed.env_world()
    distributed.init(d, torch.device("cpu"))
    loop = ganforge_trainer("dcgan", 64, random_images(64), dist=d)
    loop.train_step()
    rates = []
    for _ in range(repeats):
        d.barrier()
        rates.append(time_steps(loop, steps))  # global batch per step: BATCH
    distributed.shutdown(d)
    if not d.is_main:
        return None
    return {"world_size": d.world, "threads_per_process": torch.get_num_threads(),
            "img_per_s": statistics.median(rates), "rates": rates,
            "peak_rss_mib_rank0": peak_rss_mib()}  # fmt: skip


def ddp_rows(steps: int, repeats: int) -> list[dict]:
    common = ["--ddp-worker", "--steps", str(steps), "--repeats", str(repeats)]
    rows = []
    for nproc, threads in ((1, 1), (1, 2), (2, 1)):
        args = [*common, "--threads", str(threads)]
        launcher = []
        if nproc > 1:
            launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                        str(nproc)]  # fmt: skip
        row = run_child(args, launcher)
        rows.append(row)
        print(f"  {nproc} process(es) x {threads} thread(s): {row['img_per_s']:.1f} img/s",
              file=sys.stderr)  # fmt: skip
    return rows


def run_child(args: list[str], launcher: list[str] | None = None) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, *(launcher or []), __file__, *args],
        capture_output=True, text=True, check=False, env=env,
    )  # fmt: skip
    if out.returncode != 0:
        raise SystemExit(f"benchmark worker {args} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer steps and repeats (smoke run)")
    p.add_argument("--steps", type=int, help="training steps per timing (default 5, quick 2)")
    p.add_argument("--repeats", type=int, help="timings per configuration (default 7, quick 3)")
    p.add_argument("--options", default="{}", help="JSON trainer options for ganforge's rows")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's, all cores)")
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "train_throughput.json"))
    p.add_argument("--worker", nargs=2, metavar=("NAME", "RES"), help=argparse.SUPPRESS)
    p.add_argument("--side-by-side", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--ddp", action="store_true", help="only the 1- vs 2-process rows")
    p.add_argument("--ddp-worker", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    steps = a.steps or (2 if a.quick else 5)
    repeats = a.repeats or (3 if a.quick else 7)
    options = json.loads(a.options)
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.worker:
        print(json.dumps(worker(a.worker[0], int(a.worker[1]), steps, repeats, options)))
        return 0
    if a.side_by_side:
        print(json.dumps(side_by_side(steps, repeats, options)))
        return 0
    if a.ddp_worker:
        result = ddp_worker(steps, repeats)
        if result is not None:
            print(json.dumps(result))
        return 0
    if a.ddp:
        return ddp_main(steps, repeats, Path(a.out))

    common = ["--steps", str(steps), "--repeats", str(repeats), "--options", a.options]
    if a.threads:
        common += ["--threads", str(a.threads)]
    rows = []
    for name, res in [("textbook", 64)] + [
        (k, r) for k in ("dcgan", "cgan", "stylegan") for r in (64, 32)
    ]:
        result = run_child(["--worker", name, str(res), *common])
        label = "textbook DCGAN (pytorch/examples)" if name == "textbook" else f"ganforge {name}"
        rows.append({"model": label, "resolution": res, "batch": BATCH, **result})
        print(f"  {label} @ {res}: {result['img_per_s']:.0f} img/s", file=sys.stderr)
    sbs = run_child(["--side-by-side", *common])
    report = {
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "processor": platform.processor() or platform.machine(),
            "note": "shared machine: other processes ran at the same time; medians of "
            f"{repeats} timings of {steps} steps each",
        },
        "options": options,
        "rows": rows,
        "side_by_side_64": sbs,
        "goal": "ganforge dcgan >= 1.2x textbook img/s at 64x64, batch 64",
        "goal_met_default": sbs["ganforge_speedup_of_medians"] >= 1.2,
        "goal_met_fast": sbs["ganforge_fast_speedup_of_medians"] >= 1.2,
    }
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out, report)
    print("| model | resolution | batch | img/s (median) | peak RSS (MiB) |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['resolution']} | {r['batch']} | {r['img_per_s']:.0f} "
              f"| {r['peak_rss_mib']:.0f} |")  # fmt: skip
    print(
        f"\nside by side at 64x64, batch 64, interleaved ({repeats} x {steps} steps): textbook "
        f"{sbs['textbook_img_per_s']:.0f} img/s; ganforge dcgan {sbs['ganforge_img_per_s']:.0f} "
        f"img/s ({sbs['ganforge_speedup_of_medians']:.2f}x); ganforge dcgan --precision bf16 "
        f"--channels-last {sbs['ganforge_fast_img_per_s']:.0f} img/s "
        f"({sbs['ganforge_fast_speedup_of_medians']:.2f}x); goal 1.2x"
    )
    print(f"wrote {out}")
    return 0


def ddp_main(steps: int, repeats: int, out: Path) -> int:
    rows = ddp_rows(steps, repeats)
    report = json.loads(out.read_text()) if out.is_file() else {}
    report["ddp_textbook_dcgan_64"] = {
        "note": f"global batch {BATCH}, gloo on CPU, medians of {repeats} timings of {steps} "
        "steps; shared machine",
        "cpu_cores": os.cpu_count(),
        "rows": rows,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out, report)
    print("| processes x threads | img/s (median, global batch 64) | peak RSS rank 0 (MiB) |")
    print("|---|---:|---:|")
    for r in rows:
        print(f"| {r['world_size']} x {r['threads_per_process']} | {r['img_per_s']:.1f} "
              f"| {r['peak_rss_mib_rank0']:.0f} |")  # fmt: skip
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
