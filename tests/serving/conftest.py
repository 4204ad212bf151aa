"""Fixtures for the serving tests: bundles, environments, an in-process client, a real server."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

# Before anything imports prometheus_client: BentoML's /metrics reads the multiprocess directory.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="ganforge-prom-"))
os.environ.setdefault("BENTOML_HOME", tempfile.mkdtemp(prefix="ganforge-bentoml-"))
os.environ["BENTOML_DO_NOT_TRACK"] = "1"

REPO = Path(__file__).resolve().parents[2]
KINDS = ("dcgan", "cgan", "stylegan")
SERVING_ENV = (
    "GAN_BUNDLES",
    "GAN_MODEL_TAGS",
    "GAN_ALLOW_UNGATED",
    "GAN_API_KEY",
    "GAN_MAX_N",
    "GAN_MAX_GRID",
    "GAN_MAX_GENERATED",
    "GAN_MAX_BODY_BYTES",
    "GAN_BATCHING",
    "GAN_MAX_SCALE",
    "GAN_MAX_FRAMES",
    "GAN_DEVICE",
)


def bundle_names(dirs: dict[str, Path]) -> dict[str, str]:
    """kind -> model name, read from the manifests."""
    return {k: json.loads((Path(p) / "manifest.json").read_text())["name"] for k, p in dirs.items()}


@pytest.fixture(scope="session")
def bundle_dirs(request) -> dict[str, Path]:
    """kind -> tiny exported bundle (the export tests' session fixture)."""
    tiny = request.getfixturevalue("tiny_bundles")
    return {k: Path(tiny[k]) for k in KINDS}


@pytest.fixture(scope="session")
def names(bundle_dirs) -> dict[str, str]:
    return bundle_names(bundle_dirs)


def serving_env(bundles, **extra) -> dict[str, str]:
    env = {
        "GAN_BUNDLES": os.pathsep.join(str(b) for b in bundles),
        "GAN_ALLOW_UNGATED": "1",
    }
    env.update({k: str(v) for k, v in extra.items()})
    return env


@contextlib.contextmanager
def patched_env(env: dict[str, str]):
    with pytest.MonkeyPatch.context() as mp:
        for key in SERVING_ENV:
            mp.delenv(key, raising=False)
        for key, value in env.items():
            mp.setenv(key, value)
        yield


def _forget_bentoml_http_metrics() -> None:
    """BentoML registers its HTTP metrics once per app: let a test process build several apps."""
    from prometheus_client import REGISTRY

    for collector, metric_names in list(REGISTRY._collector_to_names.items()):
        if any(n.startswith("bentoml_service_") for n in metric_names):
            REGISTRY.unregister(collector)


@contextlib.contextmanager
def in_process(env: dict[str, str]):
    """``TestClient(GanService.to_asgi())`` under ``env``."""
    from starlette.testclient import TestClient

    from serving import config
    from serving.app import _BOUND
    from serving.service import GanService

    _forget_bentoml_http_metrics()
    outer = _BOUND[0] if _BOUND else None  # a module-scoped client's service
    with patched_env(env):
        config.reload()  # settings are parsed once per process: this app's environment
        try:
            with TestClient(GanService.to_asgi()) as client:
                yield client
        finally:
            config.reload()
            if outer is not None:  # one worker serves one service; tests nest apps
                _BOUND[:] = [outer]


@pytest.fixture(scope="module")
def client(bundle_dirs):
    with in_process(serving_env(bundle_dirs.values(), GAN_API_KEY="")) as c:
        yield c


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_command(port: int) -> list[str]:
    """``bentoml serve`` of the service, as a user runs it, on 127.0.0.1:``port``."""
    return [sys.executable, "-m", "bentoml", "serve", "serving.service:GanService",
            "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip


class Server:
    """``bentoml serve`` in its own process group on 127.0.0.1; always shut down."""

    def __init__(self, env: dict[str, str], batching: bool = True, timeout: float = 90):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = Path(tempfile.mkstemp(prefix="ganforge-serve-", suffix=".log")[1])
        full = {k: v for k, v in os.environ.items() if k not in SERVING_ENV}
        full.update(env)
        full["GAN_BATCHING"] = "1" if batching else "0"
        full["BENTOML_DO_NOT_TRACK"] = "1"
        full.pop("PROMETHEUS_MULTIPROC_DIR", None)  # bentoml serve makes its own
        self.proc = subprocess.Popen(
            serve_command(self.port),
            cwd=REPO,
            env=full,
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.timeout = timeout

    def wait_ready(self) -> Server:
        import httpx

        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bentoml serve exited ({self.proc.returncode}):\n{self.logs()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"server not ready after {self.timeout}s:\n{self.logs()}")

    def logs(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]

    def workers(self) -> list[int]:
        """PIDs of the service's worker processes (children of ``bentoml serve``, each in its
        own session)."""
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid), "-f", "_bentoml_impl.worker"],
                             capture_output=True, text=True).stdout  # fmt: skip
        return [int(p) for p in out.split()]

    def stacks(self) -> str:
        """Every worker's thread stacks (SIGUSR1: serving/service.py), then the log's tail. Waits
        until every worker has started (/readyz answers once one has; before its service is
        built a worker has no handler and SIGUSR1 would end it)."""
        workers = self.workers()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            started = self.log.read_text(errors="replace").count("Service gan_service initialized")
            if started >= len(workers):
                break
            time.sleep(0.2)
        for pid in workers:
            os.kill(pid, signal.SIGUSR1)
        time.sleep(1.0)
        return self.log.read_text(errors="replace")[-20000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.log.unlink(missing_ok=True)


@contextlib.contextmanager
def real_server(env: dict[str, str], batching: bool = True):
    server = Server(env, batching=batching)
    try:
        yield server.wait_ready()
    finally:
        server.stop()


def tampered_copy(src: Path, dst: Path) -> Path:
    """A copy of a bundle with one byte of its generator graph changed."""
    shutil.copytree(src, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    graph = next(f for f in manifest["files"] if f.endswith(".onnx"))
    data = bytearray((dst / graph).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (dst / graph).write_bytes(bytes(data))
    return dst
