"""How fast is evaluation on this machine?

- seconds to score 10,000 generated digits with the classifier extractor (goal ≤ 30 s): generation
  by a DCGAN-32 generator, then features + FD + KID + precision/recall + per-class figures;
- seconds for one Fréchet distance at d = 2048 (goal ≤ 2 s), and scipy's sqrtm form for contrast.

Prints a markdown table and writes bench/results/fid_speed.json. ``--quick``: 2,000 images, d = 2048
timed once, no scipy comparison.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from training.config import ModelConfig, write_json_atomic  # noqa: E402
from training.eval.features import get_extractor  # noqa: E402
from training.eval.fid import frechet_distance  # noqa: E402
from training.eval.score import generate_images, reference_stats, score_images  # noqa: E402
from training.models import build_generator  # noqa: E402


def _time(fn, repeats: int = 1) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def _spd(d: int, rng: np.random.Generator) -> np.ndarray:
    a = rng.standard_normal((d, d + 64))
    return a @ a.T / (d + 64) + 0.01 * np.eye(d)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="2,000 images; fewer repeats")
    p.add_argument("-n", type=int, help="number of generated images (default 10,000)")
    p.add_argument("--out", default="bench/results/fid_speed.json")
    args = p.parse_args(argv)
    n = args.n or (2_000 if args.quick else 10_000)
    rows: list[tuple[str, float, str]] = []

    t_clf, ext = _time(lambda: get_extractor("classifier", dataset="digits", log=None))
    rows.append(("load (or train) the digits classifier", t_clf, ""))
    t_ref, ref = _time(lambda: reference_stats(ext, "digits", 32, "train"))
    rows.append((f"reference stats, digits train ({ref.n} images)", t_ref, ""))

    torch.manual_seed(0)
    cfg = ModelConfig(kind="dcgan", resolution=32)
    G = build_generator(cfg).eval()
    t_gen, images = _time(
        lambda: np.concatenate([x for x, _ in generate_images(G, "dcgan", 100, n, seed=0)])
    )
    rows.append((f"generate {n:,} DCGAN-32 images (torch, CPU)", t_gen, ""))
    t_feat, _ = _time(lambda: ext.features(images))
    rows.append((f"classifier features of {n:,} images", t_feat, ""))
    t_score, res = _time(lambda: score_images(images, ref=ref, extractor=ext, seed=0))
    rows.append((f"score_images on {n:,} images (FD, KID, P&R, per-class)", t_score, ""))
    total = t_gen + t_score
    rows.append((f"**generate + score {n:,} digits**", total, "goal ≤ 30 s"))

    rng = np.random.default_rng(0)
    d = 2048
    s1, s2 = _spd(d, rng), _spd(d, rng)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    t_fd, fd = _time(lambda: frechet_distance(mu1, s1, mu2, s2), 1 if args.quick else 3)
    rows.append(
        (f"**Fréchet distance, d = {d}** (float64, symmetric eigen form)", t_fd, "goal ≤ 2 s")
    )
    t_scipy = None
    if not args.quick:
        import scipy.linalg

        def scipy_fd():
            cov = scipy.linalg.sqrtm(s1 @ s2).real
            return float((mu1 - mu2) @ (mu1 - mu2) + np.trace(s1 + s2 - 2 * cov))

        t_scipy, fd_scipy = _time(scipy_fd)
        rows.append(
            (
                f"scipy.linalg.sqrtm form, d = {d} (for contrast)",
                t_scipy,
                f"rel. diff {abs(fd - fd_scipy) / fd:.1e}",
            )
        )

    print(
        f"\n| step ({torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs, "
        f"load {os.getloadavg()[0]:.1f}) | seconds | note |"
    )
    print("|---|---:|---|")
    for name, sec, note in rows:
        print(f"| {name} | {sec:.2f} | {note} |")
    result = {
        "n": n,
        "quick": args.quick,
        "generate_s": t_gen,
        "features_s": t_feat,
        "score_s": t_score,
        "generate_plus_score_s": total,
        "score_goal_s": 30,
        "fd_2048_s": t_fd,
        "fd_2048_goal_s": 2,
        "scipy_sqrtm_2048_s": t_scipy,
        "reference_stats_s": t_ref,
        "classifier_load_s": t_clf,
        "fd_classifier_untrained_dcgan": res["fd"],
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "load_avg_1min": os.getloadavg()[0],
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": np.__version__,
        },
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out, result)
    print(f"\nwrote {out}")
    ok = total <= 30 and t_fd <= 2
    print("goals met" if ok else "goal missed (see load average: the machine may be shared)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
