"""Serve bundles for the demo: ``bentoml serve`` with GAN_BUNDLES set, plus example curl commands.

    python -m serving.demo BUNDLE_DIR [BUNDLE_DIR ...] [--port 3000] [--host 127.0.0.1]

``make demo`` calls :func:`serve_demo` with the bundles it exported and gated. Runs until Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _manifest(path: Path) -> dict:
    return json.loads((Path(path) / "manifest.json").read_text())


def curl_examples(bundle_dirs: Sequence[str | Path], url: str, api_key: str | None = None) -> str:
    """Example requests for the served models, as shell commands."""
    auth = f" -H 'Authorization: Bearer {api_key}'" if api_key else ""
    post = f"curl -s{auth} -H 'Content-Type: application/json'"
    lines = [f"curl -s {url}/readyz", f"curl -s{auth} {url}/models"]
    for path in bundle_dirs:
        m = _manifest(Path(path))
        name, kind = m["name"], m["kind"]
        lines.append(
            f'{post} {url}/generate -d \'{{"model": "{name}", "n": 16, "seed": 0, '
            f'"output": "grid", "scale": 4}}\' -o {name}-grid.png'
        )
        if m.get("class_names"):
            lines.append(
                f'{post} {url}/generate_conditional -d \'{{"model": "{name}", '
                f'"class_label": [3, 7], "n": 8, "output": "grid"}}\' -o {name}-3-7.png'
            )
        if kind == "stylegan":
            lines.append(
                f'{post} {url}/style_mix -d \'{{"model": "{name}", "row_seeds": [1, 2, 3], '
                f'"col_seeds": [4, 5, 6], "col_styles": "coarse", "output": "grid"}}\' '
                f"-o {name}-style-mix.png"
            )
            lines.append(
                f'{post} {url}/interpolate -d \'{{"model": "{name}", "seeds": [1, 2], '
                f'"steps": 8, "space": "w", "output": "grid"}}\' -o {name}-lerp.png'
            )
        lines.append(
            f'{post} {url}/generate -d \'{{"model": "{name}", "n": 4, '
            f'"filter": {{"method": "drs", "oversample": 8}}}}\' | head -c 600'
        )
    return "\n".join(lines)


def _wait_ready(url: str, proc: subprocess.Popen, timeout: float = 120) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as r:
                if r.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.5)
    return False


def serve_demo(
    bundle_dirs: Sequence[str | Path],
    port: int = 3000,
    host: str = "127.0.0.1",
    allow_ungated: bool = False,
    block: bool = True,
) -> subprocess.Popen | int:
    """Run ``bentoml serve`` on the bundles; print curl examples once ready.

    ``block=True`` waits until Ctrl-C (or the server exits) and returns its exit code;
    ``block=False`` returns the running process (stop it with ``os.killpg(proc.pid, SIGTERM)``).
    """
    bundle_dirs = [Path(p).resolve() for p in bundle_dirs]
    env = dict(os.environ)
    env.update(GAN_BUNDLES=os.pathsep.join(map(str, bundle_dirs)), BENTOML_DO_NOT_TRACK="1")
    if allow_ungated:
        env["GAN_ALLOW_UNGATED"] = "1"
    cmd = [sys.executable, "-m", "bentoml", "serve", "serving.service:GanService",
           "--host", host, "--port", str(port)]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, start_new_session=True)
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    if _wait_ready(url, proc):
        print(
            f"\nganforge is serving {len(bundle_dirs)} model(s) on {url} (Ctrl-C to stop). Try:\n"
        )
        print(curl_examples(bundle_dirs, url, env.get("GAN_API_KEY")))
        print(f"\nPlayground: {url}/playground", flush=True)
        print(f"API docs: {url}/ (Swagger UI), metrics: {url}/metrics\n", flush=True)
    elif proc.poll() is not None:
        print("error: the server did not start (see its log above)", file=sys.stderr)
        return proc.returncode if block else proc
    if not block:
        return proc
    try:
        return proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Serve ganforge bundles with BentoML.")
    ap.add_argument("bundles", nargs="+", type=Path)
    ap.add_argument("--port", type=int, default=3000)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--allow-ungated", action="store_true", help="development only")
    args = ap.parse_args(argv)
    for b in args.bundles:
        if not (b / "manifest.json").is_file():
            print(f"error: {str(b)!r} is not a bundle (no manifest.json)", file=sys.stderr)
            return 2
    return int(serve_demo(args.bundles, args.port, args.host, args.allow_ungated))


if __name__ == "__main__":
    raise SystemExit(main())
