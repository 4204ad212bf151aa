"""Serving load benchmark: ganforge against the plain handler a user would write instead.

In one run, same machine, same aiohttp client, same worker count, one server at a time:
- the **plain handler**: a Starlette app under uvicorn (``plain_app`` below), ONNX Runtime
  generator then discriminator at batch 1 for every request, a base64 PNG in JSON;
- **ganforge**: ``bentoml serve serving.service:GanService`` with the three demo bundles;
at 1, 8 and 64 concurrent one-image clients, for the digits DCGAN (32x32) and the export
benchmark's 64x64 RGB DCGAN (--no-dcgan64 skips it), and ganforge requests of 8 images. Reported:
images/s, p50/p99 latency, ganforge / plain, the mean engine batch size per level (from
/metrics: batches > 1 form under concurrency), and the resident memory (RSS) of all ganforge's
processes, idle, under load and over a soak of four more 64-client runs (growth there is a leak).
``--empty`` an empty BentoML endpoint (bench/empty_service.py), the framework's own ceiling.

Bundles: --bundles DIR... , else the newest dcgan/cgan/stylegan bundles under bundles/ (where
`make demo` writes them), else ones with the demo's architectures, briefly trained and exported
here (cached in bench/results/cache). Requests go only to 127.0.0.1.
Prints markdown tables and writes bench/results/serve_load.json.
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
GANFORGE_ENV: dict[str, str] = {}  # --env: settings of the ganforge servers (GAN_ACCESS_LOG=1 ...)
RESULTS = REPO / "bench" / "results"
GOALS = {
    "ratio_at_1": 0.8,
    "ratio_at_8": 1.0,
    "ratio_at_64": 1.0,
    "n8_vs_plain": 3.0,
    "rss_mb": 600,
}


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
    from gancore.bundle import MANIFEST, read_gate, sha256_file

    return read_gate(path, sha256_file(path / MANIFEST))[1]


# -- the plain handler ----------------------------------------------------------------------------
def plain_app():
    """What a user writes instead of ganforge: a Starlette app that runs the bundle's ONNX generator
    and discriminator once per request at batch 1 and returns a base64 PNG in JSON. Configured by
    PLAIN_BUNDLE (a bundle folder) and PLAIN_THREADS (ONNX Runtime threads per worker)."""
    import base64
    import io

    import onnxruntime as ort
    from PIL import Image
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    root = Path(os.environ["PLAIN_BUNDLE"])
    manifest = json.loads((root / "manifest.json").read_text())
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(os.environ.get("PLAIN_THREADS", "1"))

    def session(graph: str):
        file = root / manifest["graphs"][graph]["files"]["onnx"]
        return ort.InferenceSession(str(file), so, providers=["CPUExecutionProvider"])

    gen, disc = session("generator"), session("discriminator")
    g_in, d_in = gen.get_inputs()[0].name, disc.get_inputs()[0].name
    latent = int(manifest["latent_dim"])

    async def generate(request: Request):
        body = await request.json()
        seed = int(body.get("seed", 0))
        z = np.random.Generator(np.random.PCG64(seed)).standard_normal(latent, dtype=np.float32)
        image = gen.run(None, {g_in: z[None]})[0]
        score = float(disc.run(None, {d_in: image})[0].reshape(-1)[0])
        pixels = np.clip(np.rint((image[0] + 1) * 127.5), 0, 255).astype(np.uint8)
        pixels = pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0)
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="PNG")
        png = base64.b64encode(buf.getvalue()).decode("ascii")
        return JSONResponse({"images": [{"seed": seed, "score": score, "png": png}]})

    return Starlette(routes=[Route("/generate", generate, methods=["POST"])])


# -- servers ------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A server process in its own session on 127.0.0.1; ``kind`` ganforge | plain | empty."""

    def __init__(
        self, kind: str, bundles: list[Path], workers: int, ungated: bool = True, env=None
    ):
        self.kind, self.port = kind, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full = {k: v for k, v in os.environ.items() if not k.startswith(("GAN_", "PLAIN_"))}
        full.update(
            BENTOML_DO_NOT_TRACK="1",
            BENTOML_HOME=full.get("BENTOML_HOME") or tempfile.mkdtemp(prefix="bench-bentoml-"),
            PYTHONPATH=str(REPO),
            GAN_BUNDLES=os.pathsep.join(map(str, bundles)),
            GAN_API_WORKERS=str(workers),
            EMPTY_WORKERS=str(workers),
        )
        if ungated:
            full["GAN_ALLOW_UNGATED"] = "1"
        full.update(env or {})
        host = ["--host", "127.0.0.1", "--port", str(self.port)]
        targets = {
            "ganforge": "serving.service:GanService",
            "empty": "bench.empty_service:EmptyService",
        }
        if kind == "plain":
            from gancore.bundle import usable_cpus

            full.update(
                PLAIN_BUNDLE=str(bundles[0]), PLAIN_THREADS=str(max(1, usable_cpus() // workers))
            )
            cmd = [sys.executable, "-m", "uvicorn", "--factory", "bench.serve_load:plain_app",
                   "--workers", str(workers), *host]  # fmt: skip
        else:
            cmd = [sys.executable, "-m", "bentoml", "serve", targets[kind], *host]
        self.log = tempfile.NamedTemporaryFile(prefix="serve-load-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            cmd, cwd=REPO, env=full, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    def wait_ready(self, timeout: float = 180) -> None:
        import urllib.request

        probe = "/generate" if self.kind == "plain" else "/readyz"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(
                    f"{self.kind} server exited:\n{Path(self.log.name).read_text()[-4000:]}"
                )
            try:
                if probe == "/readyz":
                    with urllib.request.urlopen(f"{self.url}/readyz", timeout=2) as r:
                        if r.status == 200:
                            return
                else:
                    req = urllib.request.Request(f"{self.url}/generate", data=b'{"seed": 0}',
                                                 headers={"content-type": "application/json"})  # fmt: skip
                    with urllib.request.urlopen(req, timeout=2) as r:
                        if r.status == 200:
                            return
            except OSError:
                pass
            time.sleep(0.5)
        raise SystemExit(f"{self.kind} server not ready in time")

    def _tree_sum(self, of) -> float:
        """``of(process)`` summed over the server's processes (nan once the server is gone)."""
        import psutil

        try:
            root = psutil.Process(self.proc.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return float("nan")
        total = 0.0
        for p in procs:
            try:
                total += of(p)
            except psutil.NoSuchProcess:
                pass
        return total

    def rss_mb(self) -> float:
        return self._tree_sum(lambda p: p.memory_info().rss) / 2**20

    def cpu_seconds(self) -> float:
        """CPU time (user + system) used so far by the server's processes, all of them."""
        return self._tree_sum(lambda p: sum(p.cpu_times()[:2]))

    def batch_stats(self) -> tuple[float, float]:
        """(engine calls, rows) of the render batchers so far, from /metrics (0, 0 if none)."""
        import re
        import urllib.request

        if self.kind != "ganforge":
            return 0.0, 0.0
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=10) as r:
            text = r.read().decode()
        count = sum(
            map(
                float,
                re.findall(r'ganforge_engine_batch_size_count\{api="render"[^}]*\} (\S+)', text),
            )
        )
        rows = sum(
            map(
                float,
                re.findall(r'ganforge_engine_batch_size_sum\{api="render"[^}]*\} (\S+)', text),
            )
        )
        return count, rows

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        Path(self.log.name).unlink(missing_ok=True)


async def drive(url: str, model: str, clients: int, seconds: float, server, n: int = 1):
    """``clients`` concurrent loops, each one request (``n`` images) at a time, until the deadline."""
    import aiohttp

    latencies: list[float] = []
    errors = 0
    rss_peak = 0.0
    next_seed = iter(range(10**9))
    stop_at = time.perf_counter() + seconds

    async def client(session):
        nonlocal errors
        while time.perf_counter() < stop_at:
            body = {"model": model, "seed": next(next_seed) * n}
            if n != 1:
                body["n"] = n
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

    calls0, rows0 = await asyncio.to_thread(server.batch_stats)
    conn = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(60)) as s:
        cpu0 = server.cpu_seconds()
        t0 = time.perf_counter()
        await asyncio.gather(*(client(s) for _ in range(clients)), sample_rss())
        wall = time.perf_counter() - t0
        cpu1 = server.cpu_seconds()
    calls1, rows1 = await asyncio.to_thread(server.batch_stats)
    lat = sorted(latencies)
    return {
        "clients": clients,
        "images_per_request": n,
        "requests": len(lat),
        "errors": errors,
        "images_per_s": n * len(lat) / wall,
        "p50_ms": 1000 * statistics.median(lat) if lat else float("nan"),
        "p99_ms": 1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else float("nan"),
        "mean_batch": (rows1 - rows0) / (calls1 - calls0) if calls1 > calls0 else None,
        "rss_peak_mb": rss_peak,
        # the server's CPU per image returned (all its processes; the client is not counted)
        "server_cpu_ms_per_image": 1000 * (cpu1 - cpu0) / (n * len(lat)) if lat else None,
    }


async def warm_up(url: str, model: str, n: int = 40) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as s:
        for i in range(n):
            async with s.post(f"{url}/generate", json={"model": model, "seed": i}) as r:
                await r.read()
        bodies = [{"model": model, "seed": i} for i in range(64)]
        rs = await asyncio.gather(*(s.post(f"{url}/generate", json=b) for b in bodies))
        for r in rs:
            await r.read()


@contextlib.contextmanager
def warmed(server: Server, model: str):
    """``server`` started, ready and warmed up on ``model``; stopped on the way out."""
    try:
        server.wait_ready()
        asyncio.run(warm_up(server.url, model))
        yield server
    finally:
        server.stop()


def by_clients(rows: list[dict]) -> dict[int, dict]:
    return {r["clients"]: r for r in rows}


def measure(server: Server, model: str, levels, seconds: float, n8_levels=()) -> dict:
    with warmed(server, model):
        out = {"rss_idle_mb": server.rss_mb()}
        out["levels"] = [asyncio.run(drive(server.url, model, c, seconds, server)) for c in levels]
        out["n8"] = [
            asyncio.run(drive(server.url, model, c, seconds, server, 8)) for c in n8_levels
        ]
        out["rss_after_mb"] = server.rss_mb()
        return out


def soak(bundles: list[Path], model: str, seconds: float, workers: int, rounds: int = 4) -> list:
    """Rounds of 64 clients against one ganforge server; RSS after each (growth = a leak)."""
    with warmed(Server("ganforge", bundles, workers, env=GANFORGE_ENV), model) as server:
        out = []
        for _ in range(rounds):
            r = asyncio.run(drive(server.url, model, 64, seconds, server))
            out.append({"requests": r["requests"], "rss_mb": server.rss_mb()})
        return out


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


def best(runs: list[dict]) -> dict:
    """The fastest of repeated runs (background load on a shared machine only slows a run)."""
    out = dict(max(runs, key=lambda r: r["images_per_s"]))
    out["runs_images_per_s"] = [round(r["images_per_s"], 1) for r in runs]
    return out


def compare(
    name: str, path: Path, all_bundles: list[Path], levels, seconds, workers, rounds: int = 2
) -> dict:
    """The plain handler on ``path`` and ganforge serving ``all_bundles``, both started and warmed
    up, driven in turn (plain, ganforge, plain, ganforge, ... ``rounds`` times at each level) so a
    drift in the machine's background load hits both alike; each figure is the best of its runs."""
    plain_srv = Server("plain", [path], workers)
    ours_srv = Server("ganforge", all_bundles, workers, env=GANFORGE_ENV)
    with warmed(plain_srv, name), warmed(ours_srv, name):
        idle = ours_srv.rss_mb()
        plain, ours, n8 = [], [], []
        for c in levels:
            runs: dict[str, list] = {"plain": [], "ours": []}
            for _ in range(rounds):
                runs["plain"].append(asyncio.run(drive(plain_srv.url, name, c, seconds, plain_srv)))
                runs["ours"].append(asyncio.run(drive(ours_srv.url, name, c, seconds, ours_srv)))
            plain.append(best(runs["plain"]))
            ours.append(best(runs["ours"]))
        for c in (8, 64):
            runs8 = [asyncio.run(drive(ours_srv.url, name, c, seconds, ours_srv, 8))]
            n8.append(best(runs8))
        after = ours_srv.rss_mb()
    p, g, g8 = by_clients(plain), by_clients(ours), by_clients(n8)
    return {
        "model": name,
        "plain": {"levels": plain},
        "ganforge": {"levels": ours, "n8": n8, "rss_idle_mb": idle, "rss_after_mb": after},
        "ratio": {c: g[c]["images_per_s"] / p[c]["images_per_s"] for c in levels},
        "n8_vs_plain": {c: g8[c]["images_per_s"] / p[c]["images_per_s"] for c in g8 if c in p},
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundles", nargs="*", type=Path, help="bundle folders (default: bundles/)")
    ap.add_argument("--quick", action="store_true", help="short runs (smoke)")
    ap.add_argument("--seconds", type=float, default=None, help="seconds per level (default 8)")
    ap.add_argument("--workers", type=int, default=None, help="workers of every server")
    ap.add_argument("--no-dcgan64", action="store_true", help="skip the 64x64 DCGAN section")
    ap.add_argument("--no-soak", action="store_true", help="skip the RSS soak")
    ap.add_argument("--empty", action="store_true", help="also: an empty BentoML endpoint")
    ap.add_argument("--out", type=Path, default=RESULTS / "serve_load.json")
    ap.add_argument(
        "--env", nargs="*", default=[], metavar="NAME=VALUE", help="ganforge server settings"
    )
    args = ap.parse_args(argv)
    GANFORGE_ENV.update(v.split("=", 1) for v in args.env)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # still stop the servers we started
    from serving.config import default_api_workers

    workers = args.workers or default_api_workers()
    seconds = args.seconds or (3.0 if args.quick else 8.0)
    levels = (1, 8, 64)
    if args.bundles:
        bundles = find_bundles_from(args.bundles)
    else:
        bundles = find_bundles(REPO / "bundles")
        if set(bundles) != set(KINDS):
            print("no demo bundles under bundles/: using the demo architectures, briefly trained")
            bundles = build_tiny_bundles(RESULTS / "cache" / "demo-arch")
    if "dcgan" not in bundles:
        raise SystemExit(f"no dcgan bundle among {sorted(bundles)}")
    demo = list(bundles.values())
    name = json.loads((bundles["dcgan"] / "manifest.json").read_text())["name"]
    results: dict = {"workers": workers, "seconds_per_level": seconds, "sections": []}
    results["ganforge_env"] = dict(GANFORGE_ENV)
    results["loadavg_before"] = os.getloadavg()
    print(f"digits DCGAN {name!r}, the three demo bundles served ...", flush=True)
    results["sections"].append(compare(name, bundles["dcgan"], demo, levels, seconds, workers))
    if not args.no_dcgan64:
        path = build_dcgan64(RESULTS / "cache" / "dcgan64")
        big = json.loads((path / "manifest.json").read_text())["name"]
        print(f"64x64 RGB DCGAN {big!r}, served alone ...", flush=True)
        results["sections"].append(compare(big, path, [path], levels, seconds, workers))
    if not args.no_soak:
        print("soak: four 64-client runs against one ganforge server, RSS after each ...")
        results["soak"] = soak(demo, name, seconds, workers)
    if args.empty:
        print("an empty BentoML endpoint, same workers ...", flush=True)
        results["empty"] = measure(Server("empty", [], workers), "none", (8, 64), seconds)

    first = results["sections"][0]
    rss = [first["ganforge"]["rss_idle_mb"], first["ganforge"]["rss_after_mb"]]
    rss += [r["rss_peak_mb"] for r in first["ganforge"]["levels"] + first["ganforge"]["n8"]]
    soak_rss = [r["rss_mb"] for r in results.get("soak", [])]
    summary = {
        "ratio": {s["model"]: s["ratio"] for s in results["sections"]},
        "n8_vs_plain": {s["model"]: s["n8_vs_plain"] for s in results["sections"]},
        "rss_peak_mb": max(rss + soak_rss),
        "rss_soak_growth_mb": soak_rss[-1] - soak_rss[0] if soak_rss else None,
    }
    r = first["ratio"]
    summary["goals_met"] = {
        "ratio_at_1": r[1] >= GOALS["ratio_at_1"],
        "ratio_at_8": r[8] >= GOALS["ratio_at_8"],
        "ratio_at_64": r[64] >= GOALS["ratio_at_64"],
        "n8_vs_plain": min(first["n8_vs_plain"].values()) >= GOALS["n8_vs_plain"],
        "rss_mb": summary["rss_peak_mb"] <= GOALS["rss_mb"],
        "rss_flat_in_soak": soak_rss == [] or summary["rss_soak_growth_mb"] <= 10,
    }
    results.update(
        summary=summary,
        goals=GOALS,
        bundles={k: str(v) for k, v in bundles.items()},
        machine={"cpus": os.cpu_count(), "python": platform.python_version()},
        when=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    results["loadavg_after"] = os.getloadavg()
    report(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    from training.config import write_json_atomic

    write_json_atomic(args.out, results, default=str)
    print(f"wrote {args.out}")
    return 0


def _ms(row: dict) -> str:
    v = row.get("server_cpu_ms_per_image")
    return "-" if v is None else f"{v:.2f}"


def report(results: dict) -> None:
    print(
        f"\nServing load: {results['workers']} workers each, {results['seconds_per_level']:g} s per "
        "level, one image per request unless noted"
    )
    for sec in results["sections"]:
        p, g = by_clients(sec["plain"]["levels"]), by_clients(sec["ganforge"]["levels"])
        print(f"\n{sec['model']}")
        print("| clients | plain img/s | p50 ms | CPU ms/img | ganforge img/s | p50 ms | p99 ms "
              "| CPU ms/img | mean batch | ganforge / plain |")  # fmt: skip
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for c in sorted(g):
            b = g[c]["mean_batch"]
            print(
                f"| {c} | {p[c]['images_per_s']:.0f} | {p[c]['p50_ms']:.1f} | {_ms(p[c])} | "
                f"{g[c]['images_per_s']:.0f} | {g[c]['p50_ms']:.1f} | {g[c]['p99_ms']:.1f} | "
                f"{_ms(g[c])} | {'-' if b is None else f'{b:.1f}'} | {sec['ratio'][c]:.2f}x |"
            )
        for row in sec["ganforge"]["n8"]:
            c = row["clients"]
            b = row["mean_batch"]
            print(
                f"| {c} x n=8 | ({p[c]['images_per_s']:.0f}) | | | {row['images_per_s']:.0f} | "
                f"{row['p50_ms']:.1f} | {row['p99_ms']:.1f} | {_ms(row)} | "
                f"{'-' if b is None else f'{b:.1f}'} | {sec['n8_vs_plain'][c]:.2f}x |"
            )
    first = results["sections"][0]["ganforge"]
    s = results["summary"]
    print(
        f"\nRSS of ganforge's processes (three demo bundles): idle {first['rss_idle_mb']:.0f} MB, "
        f"peak {s['rss_peak_mb']:.0f} MB"
    )
    if results.get("soak"):
        print(
            f"soak (4 x 64 clients): RSS {[round(r['rss_mb']) for r in results['soak']]} MB "
            f"({s['rss_soak_growth_mb']:+.0f} MB first to last)"
        )
    for rows, label in ((results.get("empty", {}).get("levels"), "empty BentoML api"),):
        if rows:
            rows = by_clients(rows)
            print(f"{label}: " + ", ".join(
                f"{rows[c]['images_per_s']:.0f} img/s at {c} clients" for c in sorted(rows)
            ))  # fmt: skip
    print(
        f"load average (1, 5, 15 min) before {results['loadavg_before']}, after {results['loadavg_after']}"
    )
    print("goals met:", ", ".join(f"{k}={'yes' if v else 'NO'}" for k, v in s["goals_met"].items()))


def find_bundles_from(paths: list[Path]) -> dict[str, Path]:
    out = {}
    for p in paths:
        out[json.loads((p / "manifest.json").read_text())["kind"]] = p
    return out


if __name__ == "__main__":
    raise SystemExit(main())
