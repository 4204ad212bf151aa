"""Against a real ``bentoml serve`` process on 127.0.0.1: the promises that need the real thing
(inter-service batching, middleware in the served app, refusing bad bundles, start-up failure)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess

import httpx
import pytest

from tests.serving.conftest import REPO, real_server, serve_command, serving_env, tampered_copy

pytestmark = pytest.mark.slow
KEY = "test-key-123"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def server(bundle_dirs, tmp_path_factory):
    """All three bundles plus a tampered copy; an API key."""
    bad = tampered_copy(bundle_dirs["cgan"], tmp_path_factory.mktemp("bad") / "tampered-cgan")
    env = serving_env([bad, *bundle_dirs.values()], GAN_API_KEY=KEY)
    with real_server(env) as srv:
        yield srv


def test_tampered_bundle_is_refused_and_the_good_ones_served(server, names):
    r = httpx.get(f"{server.url}/models", headers=AUTH)
    assert r.status_code == 200
    assert sorted(m["name"] for m in r.json()["models"]) == sorted(names.values())
    assert re.search(r"refused bundle .*tampered-cgan.*checksum", server.logs())


def test_endpoints_auth_and_limits_on_a_real_server(server, names):
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as c:
        r = c.post("/generate", json={"model": names["dcgan"], "n": 2, "seed": 1})
        assert r.status_code == 200 and r.json()["count"] == 2
        r = c.post("/generate_conditional", json={"model": names["cgan"], "class_label": [0, "1"]})
        assert r.status_code == 200
        assert [i["class"]["index"] for i in r.json()["images"]] == [0, 1]
        r = c.post(
            "/style_mix",
            json={
                "model": names["stylegan"],
                "row_seeds": [1, 2],
                "col_seeds": [3, 4],
                "col_styles": "coarse",
                "output": "grid",
            },
        )
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        r = c.post("/interpolate", json={"model": names["stylegan"], "seeds": [1, 2], "space": "w"})
        assert r.status_code == 200
        # client mistakes: 4xx, and the server carries on
        assert c.post("/generate", json={"model": "missing"}).status_code == 404
        assert c.post("/generate", json={"model": names["dcgan"], "seed": -3}).status_code == 422
        for ctype in ("multipart/form-data", "text/plain"):  # no boundary: once a 500
            bad = c.post("/generate", content=b"x", headers={"content-type": ctype})
            assert bad.status_code == 415
        r = c.post("/generate", json={"model": names["dcgan"], "output": "image", "scale": 4})
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        assert c.get("/docs.json").json()["openapi"].startswith("3.1")
        assert (
            c.post(
                "/style_mix", json={"model": names["dcgan"], "row_seeds": [1], "col_seeds": [2]}
            ).status_code
            == 422
        )
        assert c.post("/generate", content=b"{oops").status_code == 400
        big = c.post(
            "/generate", content=b"0" * 1_500_000, headers={"content-type": "application/json"}
        )
        assert big.status_code == 413
        assert c.post("/generate", json={"model": names["dcgan"]}).status_code == 200
    assert httpx.post(f"{server.url}/generate", json={"model": names["dcgan"]}).status_code == 401
    assert httpx.get(f"{server.url}/readyz").status_code == 200
    assert httpx.get(f"{server.url}/livez").status_code == 200


def _batches(metrics: str) -> tuple[float, float]:
    """(engine calls, rows) of every model's render batcher so far, all workers."""
    count = re.findall(r'ganforge_engine_batch_size_count\{api="render"[^}]*\} (\S+)', metrics)
    total = re.findall(r'ganforge_engine_batch_size_sum\{api="render"[^}]*\} (\S+)', metrics)
    return sum(map(float, count)), sum(map(float, total))


def test_concurrent_requests_share_batches_and_keep_their_pixels(server, names):
    def request(i: int) -> tuple[str, dict]:
        if i % 3 == 0:
            return "/generate", {"model": names["dcgan"], "seed": 1000 + i}
        if i % 3 == 1:
            return "/generate_conditional", {
                "model": names["cgan"],
                "class_label": i % 10,
                "seed": 1000 + i,
            }
        return "/generate", {"model": names["stylegan"], "seed": 1000 + i, "truncation": 0.7}

    async def raw_burst(requests: list[tuple[str, dict]]) -> list[tuple[int, dict]]:
        """Open every connection first, then write every request at once: the requests reach the
        server together (an HTTP client library would spread them out over its own CPU time)."""
        port = int(server.url.rsplit(":", 1)[1])
        conns = await asyncio.gather(
            *(asyncio.open_connection("127.0.0.1", port) for _ in requests)
        )
        for (_, writer), (path, body) in zip(conns, requests):
            data = json.dumps(body).encode()
            writer.write(
                f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"Authorization: Bearer {KEY}\r\nContent-Length: {len(data)}\r\n"
                "Connection: close\r\n\r\n".encode()
                + data
            )

        async def answer(reader, writer):
            raw = await reader.read()
            writer.close()
            head, _, payload = raw.partition(b"\r\n\r\n")
            return int(head.split()[1]), json.loads(payload)

        return await asyncio.gather(*(answer(r, w) for r, w in conns))

    async def burst(n: int):
        async with httpx.AsyncClient(base_url=server.url, headers=AUTH, timeout=120) as c:
            before = _batches((await c.get("/metrics")).text)
            together = await raw_burst([request(i) for i in range(n)])
            after = _batches((await c.get("/metrics")).text)
            alone = []
            for path, body in map(request, range(n)):
                r = await c.post(path, json=body)
                alone.append((r.status_code, r.json()))
        return together, alone, before, after

    together, alone, before, after = asyncio.run(burst(48))
    assert all(status == 200 for status, _ in together + alone), [
        (status, str(body)[:200]) for status, body in together + alone if status != 200
    ]
    calls, rows = after[0] - before[0], after[1] - before[1]
    assert rows == 48 and calls < rows, f"{rows} images in {calls} engine calls: no batching"
    for (_, t), (_, a) in zip(together, alone):
        assert t["images"][0]["data"] == a["images"][0]["data"]
        assert t["images"][0]["seed"] == a["images"][0]["seed"]


def test_a_real_server_counts_api_requests_in_bentomls_request_metrics(server, names):
    """The API routes go through BentoML's middleware chain: their requests reach /metrics.
    (Before the tests below: their short-lived servers share the test run's Prometheus folder.)"""

    def count(text: str, code: int) -> float:
        pattern = r"^bentoml_service_request_total\{([^}]*)\} (\S+)$"
        return sum(
            float(v)
            for labels, v in re.findall(pattern, text, re.M)
            if 'endpoint="/generate"' in labels and f'http_response_code="{code}"' in labels
        )

    with httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as c:
        before = c.get("/metrics").text
        for seed in range(4):
            assert (
                c.post("/generate", json={"model": names["dcgan"], "seed": seed}).status_code == 200
            )
        assert c.post("/generate", json={"model": names["dcgan"], "seed": -1}).status_code == 422
        after = c.get("/metrics").text
    assert (count(after, 200) - count(before, 200), count(after, 422) - count(before, 422)) == (
        4,
        1,
    )


def test_sigusr1_writes_every_workers_thread_stacks_and_the_server_keeps_serving(server, names):
    """What a stuck worker is doing, without a debugger: each worker's threads (the main one in
    uvicorn's loop), in the server log; no worker dies of the signal."""
    workers = server.workers()
    assert len(workers) == 2, workers

    def frames() -> tuple[int, int]:
        text = server.log.read_text(errors="replace")
        return text.count("(most recent call first):"), text.count("uvicorn/server.py")

    before = frames()
    log = server.stacks()
    after = frames()
    assert after[0] - before[0] >= len(workers), log[-3000:]  # one dump per thread
    assert after[1] - before[1] >= len(workers), log[-3000:]  # each worker's main thread
    assert sorted(server.workers()) == sorted(workers)
    r = httpx.post(f"{server.url}/generate", json={"model": names["dcgan"]}, headers=AUTH)
    assert r.status_code == 200


def test_no_servable_bundle_means_no_server(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("GAN_")}
    env.update(GAN_BUNDLES=str(tmp_path / "nothing-here"), BENTOML_DO_NOT_TRACK="1")
    out = subprocess.run(
        serve_command(1),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode != 0
    assert "refused bundle" in out.stderr + out.stdout and "NoModels" in out.stderr + out.stdout


def test_cuda_without_a_cuda_provider_refuses_to_start(bundle_dirs):
    env = {k: v for k, v in os.environ.items() if not k.startswith("GAN_")}
    env.update(
        GAN_BUNDLES=str(bundle_dirs["dcgan"]),
        GAN_ALLOW_UNGATED="1",
        GAN_DEVICE="cuda",
        BENTOML_DO_NOT_TRACK="1",
    )
    out = subprocess.run(
        serve_command(1), cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    logs = out.stderr + out.stdout
    assert out.returncode != 0
    assert "GAN_DEVICE=cuda" in logs and "CUDAExecutionProvider" in logs, logs[-3000:]
