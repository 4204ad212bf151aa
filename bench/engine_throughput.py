"""Generator throughput per engine: eager PyTorch, TorchScript, ONNX Runtime (CPU), as images/s at
batch 1, 8 and 64 for each family, and as a percentage of this machine's fp32 matrix-multiply peak
measured in the same run.

    python bench/engine_throughput.py [--quick] [--threads 2] [--out bench/results/engine_throughput.json]

The machine is shared and noisy: every measurement is repeated in interleaved rounds (engine A,
engine B, ... then again) and the median is reported. FLOPs per image come from
``torch.utils.flop_counter`` (2 × the MACs of every conv / conv-transpose / matmul).
ONNX Runtime is also tried with other optimisation levels and thread settings; the best
setting per batch size is reported next to the default one the bundle loader uses. An optional
bf16 path (torch autocast, AVX512-BF16/AMX) is reported with its error against fp32.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.config import ModelConfig, write_json_atomic  # noqa: E402
from training.models import build_generator  # noqa: E402

BATCHES = (1, 8, 64)
FAMILIES = {
    # The 64x64 DCGAN of pytorch/examples (ngf = ndf = 64, nz = 100): the headline model.
    "dcgan": dict(kind="dcgan", resolution=64, channels=3, latent_dim=100, g_width=64),
    "cgan": dict(
        kind="cgan",
        resolution=64,
        channels=3,
        latent_dim=100,
        g_width=64,
        num_classes=10,
        class_names=[str(i) for i in range(10)],
    ),
    "stylegan": dict(
        kind="stylegan", resolution=64, channels=3, latent_dim=128, w_dim=128, g_width=32
    ),
}


class _CondGen(nn.Module):
    def __init__(self, g: nn.Module):
        super().__init__()
        self.g = g

    def forward(self, z: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        return self.g(z, label)


class _UncondGen(_CondGen):
    """StyleGAN-lite's G(z) is mapping + broadcast + synthesis."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.g(z)


def build(family: str) -> tuple[nn.Module, ModelConfig]:
    cfg = ModelConfig(**FAMILIES[family])
    torch.manual_seed(0)
    g = build_generator(cfg).eval()
    for p in g.parameters():
        p.requires_grad_(False)
    mod = _CondGen(g) if cfg.conditional else _UncondGen(g)
    return mod.eval(), cfg


def inputs(cfg: ModelConfig, batch: int) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(batch)
    z = torch.randn(batch, cfg.latent_dim, generator=gen)
    if cfg.conditional:
        return z, torch.randint(0, cfg.num_classes, (batch,), generator=gen)
    return (z,)


def flops_per_image(mod: nn.Module, cfg: ModelConfig) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    x = inputs(cfg, 8)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        mod(*x)
    return fc.get_total_flops() / 8


def matmul_rate(min_time: float, threads: int, n: int = 2048) -> float:
    """fp32 GEMM GFLOP/s of ``n``^3 torch.mm on ``threads`` threads over >= ``min_time`` s."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(n, n), torch.randn(n, n)
        torch.mm(a, b)
        k, t0 = 0, time.perf_counter()
        while True:
            torch.mm(a, b)
            k += 1
            dt = time.perf_counter() - t0
            if dt >= min_time and k >= 2:
                return k * 2 * n**3 / dt / 1e9
    finally:
        torch.set_num_threads(before)


def export(mod: nn.Module, cfg: ModelConfig, folder: Path) -> tuple[Path, Path]:
    batch = torch.export.Dim("batch", min=1, max=4096)
    names = ["z", "label"] if cfg.conditional else ["z"]
    ex = inputs(cfg, 2)
    onnx_path, ts_path = folder / f"{cfg.kind}.onnx", folder / f"{cfg.kind}.ts"
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            mod,
            ex,
            str(onnx_path),
            input_names=names,
            output_names=["image"],
            dynamo=True,
            dynamic_shapes={n: {0: batch} for n in names},
            external_data=False,
        )
        torch.jit.save(torch.jit.trace(mod, ex, check_trace=False), str(ts_path))
    return onnx_path, ts_path


def ort_session(path: Path, threads: int, level: str = "ALL", spinning: bool = True):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, f"ORT_ENABLE_{level}")
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    so.log_severity_level = 3
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    names = [i.name for i in s.get_inputs()]
    return lambda *x: s.run(None, {n: a for n, a in zip(names, x)})[0]


def timed(fn, args, min_time: float) -> float:
    """Images per second of ``fn(*args)`` over at least ``min_time`` seconds (after 1 warm-up)."""
    fn(*args)
    n, t0 = 0, time.perf_counter()
    while True:
        fn(*args)
        n += 1
        dt = time.perf_counter() - t0
        if dt >= min_time and n >= 2:
            return n * len(args[0]) / dt


def bench_family(
    family: str, threads: int, rounds: int, min_time: float, tmp: Path, peaks: dict
) -> dict:
    mod, cfg = build(family)
    flops = flops_per_image(mod, cfg)
    onnx_path, ts_path = export(mod, cfg, tmp)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ts = torch.jit.load(str(ts_path)).eval()
    torch.set_num_threads(threads)

    def torch_fn(m):
        def run(*x):
            with torch.inference_mode():
                return m(*x)

        return run

    def bf16_fn(*x):
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            return mod(*x)

    ort_variants = {
        "ort": ort_session(onnx_path, threads),  # ORT_ENABLE_ALL (NCHWc layouts), spinning
        "ort_nospin": ort_session(onnx_path, threads, spinning=False),  # bundle loader default
        "ort_extended": ort_session(onnx_path, threads, "EXTENDED"),
        "ort_1thread": ort_session(onnx_path, 1),
    }
    engines = {"eager": torch_fn(mod), "torchscript": torch_fn(ts), **ort_variants}
    engines["eager_bf16"] = bf16_fn
    res: dict = {"flops_per_image": flops, "config": FAMILIES[family], "batches": {}}
    for b in BATCHES:
        x_t = inputs(cfg, b)
        x_np = tuple(t.numpy() for t in x_t)
        with torch.inference_mode():
            ref = mod(*x_t)
        errors = {
            "torchscript": float((torch_fn(ts)(*x_t) - ref).abs().max()),
            "ort": float(np.abs(ort_variants["ort"](*x_np) - ref.numpy()).max()),
            "eager_bf16": float((bf16_fn(*x_t).float() - ref).abs().max()),
        }
        samples: dict[str, list[float]] = {k: [] for k in engines}
        for _ in range(rounds):  # interleaved rounds (the peak too), medians below
            peaks["all"].append(matmul_rate(min_time, threads))
            peaks["one"].append(matmul_rate(min_time, 1))
            for name, fn in engines.items():
                args = x_np if name.startswith("ort") else x_t
                samples[name].append(timed(fn, args, min_time))
        res["batches"][str(b)] = {
            "img_per_s": {k: statistics.median(v) for k, v in samples.items()},
            "max_abs_err_vs_eager_fp32": errors,
        }
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer rounds, DCGAN only (about 1 min)")
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--families", default=None, help="comma list (default: all; --quick: dcgan)")
    p.add_argument("--out", default="bench/results/engine_throughput.json")
    args = p.parse_args(argv)
    families = (args.families or ("dcgan" if args.quick else "dcgan,cgan,stylegan")).split(",")
    rounds, min_time = (3, 0.3) if args.quick else (5, 0.6)

    torch.set_num_threads(args.threads)
    peaks: dict[str, list[float]] = {"all": [], "one": []}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for fam in families:
            print(f"benchmarking {fam} ...", file=sys.stderr, flush=True)
            results[fam] = bench_family(fam, args.threads, rounds, min_time, Path(tmp), peaks)
    # The GEMM peak is measured in the same interleaved rounds as the engines, so both see the
    # same machine load. On a busy machine a multi-threaded GEMM stalls on its barriers, so the
    # peak is the larger of the N-thread median and N x the 1-thread median (conservative %).
    peak_n = statistics.median(peaks["all"])
    peak_1 = statistics.median(peaks["one"])
    peak = max(peak_n, args.threads * peak_1)

    import onnxruntime

    report = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "threads": args.threads,
            "fp32_matmul_peak_gflops": peak,
            "fp32_matmul_median_gflops": {"n_threads": peak_n, "one_thread": peak_1},
            "peak_samples_gflops": peaks,
        },
        "versions": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__},
        "rounds": rounds,
        "results": results,
    }
    lines = [
        f"fp32 matmul peak (2048^3 torch.mm, medians of {len(peaks['all'])} interleaved "
        f"samples): {peak:.0f} GFLOP/s for {args.threads} threads ({args.threads}-thread GEMM "
        f"{peak_n:.0f}, 1-thread GEMM {peak_1:.0f})",
        "",
        "| family | GFLOP/img | batch | eager | TorchScript | ORT (default) | ORT best "
        "| ORT % peak | bf16 eager (max err) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for fam, r in results.items():
        gf = r["flops_per_image"] / 1e9
        for b, br in r["batches"].items():
            ips = br["img_per_s"]
            ort_keys = [k for k in ips if k.startswith("ort")]
            best = max(ort_keys, key=lambda k: ips[k])
            pct = 100 * ips[best] * r["flops_per_image"] / (peak * 1e9)
            br["ort_best"] = {"variant": best, "img_per_s": ips[best], "pct_of_peak": pct}
            br["eager_pct_of_peak"] = 100 * ips["eager"] * r["flops_per_image"] / (peak * 1e9)
            lines.append(
                f"| {fam} | {gf:.3f} | {b} | {ips['eager']:.0f} | {ips['torchscript']:.0f} | "
                f"{ips['ort_nospin']:.0f} | {ips[best]:.0f} ({best}) | {pct:.0f}% | "
                f"{ips['eager_bf16']:.0f} ({br['max_abs_err_vs_eager_fp32']['eager_bf16']:.1e}) |"
            )
    print("\n".join(lines))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out, report)
    print(f"\nwrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
