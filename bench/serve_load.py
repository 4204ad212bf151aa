"""Serving load benchmark: `bentoml serve` under 1/8/32/64 concurrent one-image clients.

Measures, in one run on this machine:
- the engine's own throughput (export.bundle called directly, batch 64): generator alone and
  generator + discriminator (the work behind one served image, which carries a score);
- the server's images/s and p50/p99 latency with adaptive batching on and off (GAN_BATCHING=0);
- the resident memory (RSS) of all the server's processes, idle and under load, and over a soak
  of four more 64-client runs against one server (growth there is a leak, not warm-up);
- the same load against an empty BentoML endpoint (bench/empty_service.py) with the same workers:
  what the framework itself costs per request, the ceiling for one-image requests;
- the export benchmark's 64x64 RGB DCGAN served alone (8 and 64 clients, batching on and off),
  where the engine, not HTTP, is the larger cost (--no-dcgan64 skips it).

Bundles: --bundles DIR... , else the newest dcgan/cgan/stylegan bundles under bundles/ (where
`make demo` writes them), else tiny
ones trained and exported here (cached in bench/results/cache). Requests go only to 127.0.0.1.
Prints a markdown table and writes bench/results/serve_load.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
KINDS = ("dcgan", "cgan", "stylegan")
RESULTS = REPO / "bench" / "results"
GOALS = {"ratio_engine_at_64": 0.70, "speedup_vs_off_at_64": 5.0, "p99_ms_at_8": 250, "rss_mb": 600}


# -- bundles ------------------------------------------------------------------------------------
def find_bundles(root: Path) -> dict[str, Path]:
    """Newest bundle of each kind under ``root`` (folders holding a manifest.json)."""
    found: dict[str, tuple[float, Path]] = {}
    for manifest in root.glob("**/manifest.json"):
        try:
            m = json.loads(manifest.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        kind, mtime = m.get("kind"), manifest.stat().st_mtime
        if m.get("format") == "ganforge-bundle" and kind in KINDS:
            if kind not in found or mtime > found[kind][0]:
                found[kind] = (mtime, manifest.parent)
    return {k: v[1] for k, v in found.items()}


def build_tiny_bundles(cache: Path) -> dict[str, Path]:
    """Briefly train and export models with the demo's architectures (cached between runs): the
    pixels are poor, the serving cost is the demo's."""
    have = find_bundles(cache / "bundles")
    if set(have) == set(KINDS):
        return have
    from export.exporter import export_run
    from training.cli import main as gan_train
    from training.demo import DEMO_OPTIONS

    out = {}
    for kind in KINDS:
        run, opts = cache / "runs" / kind, DEMO_OPTIONS[kind]
        if not run.exists():
            args = ["--model", kind, "--dataset", "digits", "--resolution", str(opts["resolution"]),
                    "--g-width", str(opts["g_width"]), "--d-width", str(opts["d_width"]),
                    "--kimg", "0.256", "--batch-size", "32", "--eval-every", "0",
                    "--sample-every", "1000", "--ckpt-every", "1000", "--out", str(run)]  # fmt: skip
            if gan_train(args) != 0:
                raise SystemExit(f"gan-train failed for {kind}")
        out[kind] = export_run(
            run, cache / "bundles" / kind, formats=("onnx",), calibration_n=1000, overwrite=True
        )
    return out


def gate_passed(path: Path) -> bool:
    from export.bundle import MANIFEST, read_gate, sha256_file

    return read_gate(path, sha256_file(path / MANIFEST))[1]


# -- engine reference ---------------------------------------------------------------------------
def engine_throughput(path: Path, batch: int = 64, seconds: float = 3.0) -> dict[str, float]:
    """Images/s of the bundle's graphs called directly at ``batch`` (ONNX Runtime, same threads)."""
    from export import sampling
    from export.bundle import load

    b = load(path, require_gate=False)
    seeds = list(range(batch))
    labels = sampling.labels_for_seeds(seeds, b.num_classes)
    z = sampling.z_from_seeds(seeds, b.latent_dim)
    if b.kind == "stylegan":
        w = b.mapping(z, labels)
        ws = np.repeat(w[:, None, :], b.num_ws, axis=1)

        def gen():
            return b.synthesis(ws)
    else:

        def gen():
            return b.generator(z, labels)

    def timed(fn) -> float:
        fn()
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            fn()
            n += batch
        return n / (time.perf_counter() - t0)

    gen()
    return {
        "generator": timed(gen),
        "generator+discriminator": timed(lambda: b.discriminator(gen(), labels)),
        "provider": b.provider,
    }


# -- server -------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(
        self,
        bundles: list[Path],
        batching: bool,
        ungated: bool,
        extra_env=None,
        target: str = "serving.service:GanService",
    ):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("GAN_")}
        env.update(
            GAN_BUNDLES=os.pathsep.join(map(str, bundles)),
            GAN_BATCHING="1" if batching else "0",
            BENTOML_DO_NOT_TRACK="1",
            BENTOML_HOME=env.get("BENTOML_HOME") or tempfile.mkdtemp(prefix="bench-bentoml-"),
        )
        if ungated:
            env["GAN_ALLOW_UNGATED"] = "1"
        env.update(extra_env or {})
        self.log = tempfile.NamedTemporaryFile(prefix="serve-load-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bentoml", "serve", target,
             "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=REPO, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

    def wait_ready(self, timeout: float = 120) -> None:
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(
                    f"bentoml serve exited:\n{Path(self.log.name).read_text()[-4000:]}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise SystemExit("server not ready in time")

    def rss_mb(self) -> float:
        import psutil

        try:
            root = psutil.Process(self.proc.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return float("nan")
        total = 0
        for p in procs:
            try:
                total += p.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total / 2**20

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        Path(self.log.name).unlink(missing_ok=True)


async def drive(
    url: str, model: str, clients: int, seconds: float, max_requests: int, server, n: int = 1
):
    """``clients`` concurrent loops, each one request (``n`` images) at a time, until the deadline."""
    import aiohttp

    latencies: list[float] = []
    errors = 0
    rss_peak = 0.0
    next_seed = iter(range(10**9))
    stop_at = time.perf_counter() + seconds

    async def client(session):
        nonlocal errors
        while time.perf_counter() < stop_at and len(latencies) < max_requests:
            body = {"model": model, "seed": next(next_seed) * n, "n": n}
            t0 = time.perf_counter()
            async with session.post(f"{url}/generate", json=body) as r:
                await r.read()
                ok = r.status == 200
            if ok:
                latencies.append(time.perf_counter() - t0)
            else:
                errors += 1

    async def sample_rss():
        nonlocal rss_peak
        while time.perf_counter() < stop_at:
            rss_peak = max(rss_peak, await asyncio.to_thread(server.rss_mb))
            await asyncio.sleep(0.5)

    conn = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(60)) as s:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(s) for _ in range(clients)), sample_rss())
        wall = time.perf_counter() - t0
    lat = sorted(latencies)
    return {
        "clients": clients,
        "images_per_request": n,
        "requests": len(lat),
        "errors": errors,
        "images_per_s": n * len(lat) / wall,
        "p50_ms": 1000 * statistics.median(lat) if lat else float("nan"),
        "p99_ms": 1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else float("nan"),
        "rss_peak_mb": rss_peak,
    }


async def warm_up(url: str, model: str, n: int = 40) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as s:
        for i in range(n):  # sequential: BentoML's batcher trains on its first calls
            async with s.post(f"{url}/generate", json={"model": model, "seed": i}) as r:
                await r.read()
        bodies = [{"model": model, "seed": i} for i in range(64)]
        await asyncio.gather(*(s.post(f"{url}/generate", json=b) for b in bodies))


@contextlib.contextmanager
def warmed(server: Server, model: str):
    """``server`` started, ready and warmed up on ``model``; stopped on the way out."""
    try:
        server.wait_ready()
        asyncio.run(warm_up(server.url, model))
        yield server
    finally:
        server.stop()


def ganforge_server(bundles, batching, ungated, workers) -> Server:
    return Server(list(bundles.values()), batching, ungated, {"GAN_API_WORKERS": str(workers)})


def by_clients(rows: list[dict]) -> dict[int, dict]:
    return {r["clients"]: r for r in rows}


def run_server(bundles, model, batching, ungated, levels, seconds, max_requests, workers, n8=True):
    with warmed(ganforge_server(bundles, batching, ungated, workers), model) as server:
        idle = server.rss_mb()
        rows = [
            asyncio.run(drive(server.url, model, c, seconds, max_requests, server)) for c in levels
        ]
        out = {"rss_idle_mb": idle, "levels": rows}
        if n8:  # the same engine path when each request carries 8 images: what HTTP costs
            out["n8"] = asyncio.run(
                drive(server.url, model, 64, seconds, max_requests, server, n=8)
            )
        out["rss_after_mb"] = server.rss_mb()
        return out


def empty_ceiling(workers: int, levels, seconds: float) -> list[dict]:
    """req/s of an empty BentoML endpoint (bench/empty_service.py): the framework's own ceiling."""
    env = {"EMPTY_WORKERS": str(workers)}
    empty = Server([], True, False, env, target="bench.empty_service:EmptyService")
    with warmed(empty, "none") as server:
        return [asyncio.run(drive(server.url, "none", c, seconds, 10**6, server)) for c in levels]


def build_dcgan64(cache: Path) -> Path:
    """The export benchmark's headline model, the 64x64 RGB DCGAN of pytorch/examples (nz 100,
    ngf = ndf = 64), briefly trained on torchvision FakeData and exported: its pixels are noise,
    its serving cost is the real model's. Cached between runs; served ungated (flagged so)."""
    have = find_bundles(cache / "bundles")
    if "dcgan" in have:
        return have["dcgan"]
    from export.exporter import export_run
    from training.cli import main as gan_train

    run = cache / "runs" / "dcgan64"
    if not run.exists():
        args = ["--model", "dcgan", "--dataset", "fake", "--resolution", "64", "--latent-dim",
                "100", "--g-width", "64", "--d-width", "64", "--kimg", "0.128",
                "--batch-size", "32", "--eval-every", "0", "--sample-every", "1000",
                "--ckpt-every", "1000", "--out", str(run)]  # fmt: skip
        if gan_train(args) != 0:
            raise SystemExit("gan-train failed for the dcgan-64 bundle")
    return export_run(
        run, cache / "bundles" / "dcgan64", formats=("onnx",), calibration_n=500, overwrite=True
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundles", nargs="*", type=Path, help="bundle folders (default: bundles/)")
    ap.add_argument("--kind", default="dcgan", choices=KINDS, help="model the clients ask for")
    ap.add_argument("--quick", action="store_true", help="short runs (CI smoke)")
    ap.add_argument("--seconds", type=float, default=None, help="seconds per concurrency level")
    ap.add_argument(
        "--api-workers", type=int, default=None, help="GAN_API_WORKERS (default: the server's)"
    )
    ap.add_argument("--no-dcgan64", action="store_true", help="skip the 64x64 DCGAN section")
    ap.add_argument("--out", type=Path, default=RESULTS / "serve_load.json")
    args = ap.parse_args(argv)
    # a SIGTERM must still stop the server we started (the `finally` in run_server)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    from serving.config import default_api_workers

    workers = args.api_workers or default_api_workers()
    seconds = args.seconds or (3.0 if args.quick else 10.0)
    levels = (1, 8, 32, 64)
    if args.bundles:
        bundles = find_bundles_from(args.bundles)
    else:
        bundles = find_bundles(REPO / "bundles")
        if set(bundles) != set(KINDS):
            print("no demo bundles under bundles/: building tiny ones (cached)", flush=True)
            bundles = build_tiny_bundles(RESULTS / "cache" / "demo-arch")
    if args.kind not in bundles:
        raise SystemExit(f"no {args.kind} bundle among {sorted(bundles)}")
    ungated = not all(gate_passed(p) for p in bundles.values())
    if ungated:
        print("note: some bundles have no passing gate; serving them with GAN_ALLOW_UNGATED=1")
    manifest = json.loads((bundles[args.kind] / "manifest.json").read_text())
    model = manifest["name"]

    print(f"engine reference: {model} at batch 64 ...", flush=True)
    engine = engine_throughput(bundles[args.kind], seconds=2.0 if args.quick else 5.0)
    results = {"model": model, "kind": args.kind, "api_workers": workers, "engine_batch64": engine}
    for batching in (True, False):
        label = "batching on" if batching else "batching off"
        print(f"serving the demo bundles with {label} ...", flush=True)
        results["on" if batching else "off"] = run_server(
            bundles, model, batching, ungated, levels, seconds, 100_000, workers
        )
    print("soak: four 64-client runs against one server, RSS after each ...", flush=True)
    results["soak"] = soak(bundles, model, ungated, seconds, workers)
    print("an empty BentoML endpoint, same workers and load ...", flush=True)
    results["empty"] = empty_ceiling(workers, (8, 64), seconds)
    if not args.no_dcgan64:
        print("the export benchmark's 64x64 DCGAN, served alone ...", flush=True)
        path = build_dcgan64(RESULTS / "cache" / "dcgan64")
        name = json.loads((path / "manifest.json").read_text())["name"]
        big = {"model": name, "path": str(path)}
        big["engine_batch64"] = engine_throughput(path, seconds=2.0 if args.quick else 5.0)
        for batching in (True, False):
            big["on" if batching else "off"] = run_server(
                {"dcgan": path}, name, batching, True, (8, 64), seconds, 100_000, workers, False
            )
        results["dcgan64"] = big

    on = by_clients(results["on"]["levels"])
    off = by_clients(results["off"]["levels"])
    empty = by_clients(results["empty"])
    ref = engine["generator+discriminator"]
    soak_rss = [r["rss_mb"] for r in results["soak"]]
    summary = {
        "ratio_engine_at_64": on[64]["images_per_s"] / ref,
        "ratio_engine_generator_only_at_64": on[64]["images_per_s"] / engine["generator"],
        "speedup_vs_off_at_64": on[64]["images_per_s"] / off[64]["images_per_s"],
        "p99_ms_at_8": on[8]["p99_ms"],
        "empty_endpoint_req_s_at_64": empty[64]["images_per_s"],
        "ratio_empty_endpoint_at_64": on[64]["images_per_s"] / empty[64]["images_per_s"],
        "empty_endpoint_ratio_engine": empty[64]["images_per_s"] / ref,
        "rss_idle_mb": results["on"]["rss_idle_mb"],
        "rss_peak_mb": max([r["rss_peak_mb"] for r in results["on"]["levels"]] + soak_rss),
        "rss_growth_mb": results["on"]["rss_after_mb"] - results["on"]["rss_idle_mb"],
        "rss_soak_growth_mb": soak_rss[-1] - soak_rss[0],
    }
    if "dcgan64" in results:
        big = results["dcgan64"]
        bon = by_clients(big["on"]["levels"])
        boff = by_clients(big["off"]["levels"])
        bref = big["engine_batch64"]["generator+discriminator"]
        summary["dcgan64_ratio_engine_at_64"] = bon[64]["images_per_s"] / bref
        summary["dcgan64_speedup_vs_off_at_64"] = bon[64]["images_per_s"] / boff[64]["images_per_s"]
    summary["goals_met"] = {
        "ratio_engine_at_64": summary["ratio_engine_at_64"] >= GOALS["ratio_engine_at_64"],
        "speedup_vs_off_at_64": summary["speedup_vs_off_at_64"] >= GOALS["speedup_vs_off_at_64"],
        "p99_ms_at_8": summary["p99_ms_at_8"] < GOALS["p99_ms_at_8"],
        "rss_mb": summary["rss_peak_mb"] <= GOALS["rss_mb"],
        "rss_no_growth_in_soak": summary["rss_soak_growth_mb"] <= 10,
    }
    results.update(
        summary=summary,
        goals=GOALS,
        seconds_per_level=seconds,
        bundles={k: str(v) for k, v in bundles.items()},
        machine={"cpus": os.cpu_count(), "python": platform.python_version()},
        when=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    report(results, levels)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")
    return 0


def soak(bundles, model, ungated, seconds, workers, rounds: int = 4) -> list[dict]:
    """Rounds of 64 clients against one server; RSS after each (growth = a leak, not warm-up)."""
    with warmed(ganforge_server(bundles, True, ungated, workers), model) as server:
        out = []
        for _ in range(rounds):
            r = asyncio.run(drive(server.url, model, 64, seconds, 10**6, server))
            out.append({"requests": r["requests"], "rss_mb": server.rss_mb()})
        return out


def _row(label, a, b) -> str:
    return (
        f"| {label} | {a['images_per_s']:.0f} | {a['p50_ms']:.1f} | {a['p99_ms']:.1f} | "
        f"{b['images_per_s']:.0f} | {b['p50_ms']:.1f} | {b['p99_ms']:.1f} |"
    )


def report(results: dict, levels) -> None:
    engine, s = results["engine_batch64"], results["summary"]
    on = by_clients(results["on"]["levels"])
    off = by_clients(results["off"]["levels"])
    print(
        f"\nServing load — {results['model']} ({results['kind']}), one image per request, "
        f"{results['seconds_per_level']:g} s per level, {results['api_workers']} API workers"
    )
    print(f"engine batch 64 ({engine['provider']}): generator {engine['generator']:.0f} img/s, "
          f"generator+discriminator {engine['generator+discriminator']:.0f} img/s\n")  # fmt: skip
    head = (
        "| clients | batching on img/s | p50 ms | p99 ms | batching off img/s | p50 ms | p99 ms |"
    )
    print(head + "\n|---:|---:|---:|---:|---:|---:|---:|")
    for c in levels:
        print(_row(str(c), on[c], off[c]))
    print(_row("64 x n=8", results["on"]["n8"], results["off"]["n8"]))
    empty = by_clients(results["empty"])
    print(
        f"\nempty BentoML endpoint, same workers: {empty[8]['images_per_s']:.0f} req/s at 8 "
        f"clients, {empty[64]['images_per_s']:.0f} at 64 "
        f"(= {100 * s['empty_endpoint_ratio_engine']:.0f}% of the engine's G+D batch-64)"
    )
    print(
        f"at 64 clients: {100 * s['ratio_engine_at_64']:.0f}% of engine G+D batch-64 "
        f"({100 * s['ratio_engine_generator_only_at_64']:.0f}% of generator-only), "
        f"{100 * s['ratio_empty_endpoint_at_64']:.0f}% of the empty endpoint, "
        f"{s['speedup_vs_off_at_64']:.1f}x batching off; p99 at 8 clients {s['p99_ms_at_8']:.0f} ms"
    )
    print(
        f"RSS of the server's processes: idle {s['rss_idle_mb']:.0f} MB, peak under load "
        f"{s['rss_peak_mb']:.0f} MB, growth over the level run {s['rss_growth_mb']:+.0f} MB; soak "
        f"(4 x 64 clients) RSS {[round(r['rss_mb']) for r in results['soak']]} MB "
        f"({s['rss_soak_growth_mb']:+.0f} MB first to last)"
    )
    if "dcgan64" in results:
        big = results["dcgan64"]
        bon = by_clients(big["on"]["levels"])
        boff = by_clients(big["off"]["levels"])
        e = big["engine_batch64"]
        print(
            f"\n{big['model']} (64x64 RGB DCGAN, served alone): engine batch 64 generator "
            f"{e['generator']:.0f} img/s, generator+discriminator {e['generator+discriminator']:.0f}"
        )
        print(head + "\n|---:|---:|---:|---:|---:|---:|---:|")
        for c in (8, 64):
            print(_row(str(c), bon[c], boff[c]))
        print(
            f"at 64 clients: {100 * s['dcgan64_ratio_engine_at_64']:.0f}% of engine G+D batch-64, "
            f"{s['dcgan64_speedup_vs_off_at_64']:.1f}x batching off"
        )
    print("goals met:", ", ".join(f"{k}={'yes' if v else 'NO'}" for k, v in s["goals_met"].items()))


def find_bundles_from(paths: list[Path]) -> dict[str, Path]:
    out = {}
    for p in paths:
        out[json.loads((p / "manifest.json").read_text())["kind"]] = p
    return out


if __name__ == "__main__":
    raise SystemExit(main())
