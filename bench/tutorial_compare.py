"""The pytorch/examples DCGAN loop against `gan-train`, for the same wall time on the same data,
both imported or exported and gated by the same rules (issue 23's comparison).

    python bench/tutorial_compare.py --seconds 240 --dataset digits --out bench/results/tutorial

1. reference statistics: `gan-eval stats --split heldout` at 64×64;
2. the tutorial: its architecture and training step (bench/train_throughput.py, the algorithm of
   dcgan/main.py: BCE, Adam 2e-4 with beta1 0.5, batch 64, nz 100, ngf = ndf = 64, shuffled
   epochs) for SECONDS of wall time, saved as `netG.pth` / `netD.pth` state dicts as main.py saves
   them, then `gan-export import … --discriminator … --gate`;
3. ganforge: `gan-train --model dcgan --resolution 64 --minutes SECONDS/60` with the family's
   defaults, then `gan-export … --gate`;
4. a table of both gates (same N, same rules) on stdout and in `compare.json`.

Both train with the same torch thread count (the machine's default). Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
BATCH, NZ = 64, 100


def sh(*args: str, ok: tuple[int, ...] = (0,)) -> None:
    print("$", " ".join(args), flush=True)
    rc = subprocess.run(args, cwd=REPO).returncode
    if rc not in ok:
        raise SystemExit(f"{args[2]} exited {rc}")


def train_tutorial(dataset: str, seconds: float, out: Path) -> dict:
    import torch

    from bench.train_throughput import TextbookD, TextbookG, _textbook_init
    from training.datasets import load_dataset

    ds = load_dataset(dataset, 64, "train")
    data = torch.stack([ds[i][0] for i in range(len(ds))])  # [N, C, 64, 64] in [-1, 1]
    nc = data.shape[1]
    torch.manual_seed(0)
    netG, netD = TextbookG(NZ, 64, nc), TextbookD(64, nc)
    netG.apply(_textbook_init)
    netD.apply(_textbook_init)
    bce = torch.nn.BCELoss()
    optD = torch.optim.Adam(netD.parameters(), lr=2e-4, betas=(0.5, 0.999))
    optG = torch.optim.Adam(netG.parameters(), lr=2e-4, betas=(0.5, 0.999))
    t0, steps, images = time.monotonic(), 0, 0
    while time.monotonic() - t0 < seconds:
        for idx in torch.randperm(len(data)).split(BATCH):  # DataLoader(shuffle=True)
            if time.monotonic() - t0 >= seconds:
                break
            real = data[idx]
            b = real.size(0)
            netD.zero_grad()
            errD_real = bce(netD(real).view(-1), torch.ones(b))
            errD_real.backward()
            fake = netG(torch.randn(b, NZ, 1, 1))
            errD_fake = bce(netD(fake.detach()).view(-1), torch.zeros(b))
            errD_fake.backward()
            optD.step()
            netG.zero_grad()
            errG = bce(netD(fake).view(-1), torch.ones(b))
            errG.backward()
            optG.step()
            steps, images = steps + 1, images + b
    out.mkdir(parents=True, exist_ok=True)
    torch.save(netG.state_dict(), out / "netG.pth")
    torch.save(netD.state_dict(), out / "netD.pth")
    return {"steps": steps, "kimg": images / 1000, "seconds": time.monotonic() - t0}


def gate_row(bundle: Path) -> dict:
    g = json.loads((bundle / "gate.json").read_text())
    keep = ("verdict", "distance", "real_floor", "fd_ratio", "precision", "recall", "n",
            "failed_rules")  # fmt: skip
    return {k: g.get(k) for k in keep}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=240)
    p.add_argument("--dataset", default="digits")
    p.add_argument("--out", default="bench/results/tutorial")
    a = p.parse_args()
    out = (REPO / a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    ref = out / "ref-64.npz"
    if not ref.exists():
        sh(py, "-m", "training.eval.cli", "stats", "--dataset", a.dataset, "--resolution", "64",
           "--split", "heldout", "--out", str(ref))  # fmt: skip
    print(f"== the tutorial's loop, {a.seconds:.0f} s", flush=True)
    tut = train_tutorial(a.dataset, a.seconds, out / "tutorial")
    print(tut, flush=True)
    # exit status 1 is the gate refusing a bundle: a result here, not a failure
    sh(py, "-m", "export.cli", "import", str(out / "tutorial" / "netG.pth"), "--discriminator",
       str(out / "tutorial" / "netD.pth"), "--out", str(out / "bundles" / "tutorial"),
       "--overwrite", "--calibration-n", "2000", "--gate", "--ref", str(ref), "-q",
       ok=(0, 1))  # fmt: skip
    print(f"== gan-train --minutes {a.seconds / 60:g}", flush=True)
    run = out / "runs" / "ganforge"
    sh(py, "-m", "training.cli", "--model", "dcgan", "--dataset", a.dataset, "--resolution", "64",
       "--minutes", f"{a.seconds / 60:g}", "--no-progress", "--out", str(run))  # fmt: skip
    sh(py, "-m", "export.cli", str(run), "--out", str(out / "bundles" / "ganforge"), "--overwrite",
       "--calibration-n", "2000", "--gate", "--ref", str(ref), "-q", ok=(0, 1))  # fmt: skip
    cfg = json.loads((run / "config.json").read_text())
    res = {
        "dataset": a.dataset,
        "seconds": a.seconds,
        "tutorial": {**tut, "gate": gate_row(out / "bundles" / "tutorial")},
        "ganforge": {"kimg": cfg["train"]["kimg"], "gate": gate_row(out / "bundles" / "ganforge")},
    }
    (out / "compare.json").write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
