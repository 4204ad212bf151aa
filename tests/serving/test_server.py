"""Against a real ``bentoml serve`` process on 127.0.0.1: the promises that need the real thing
(inter-service batching, middleware in the served app, refusing bad bundles, start-up failure)."""

from __future__ import annotations

import asyncio
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
    r = httpx.post(f"{server.url}/models", json={}, headers=AUTH)
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
        assert c.post("/generate", json={"model": names["dcgan"], "seed": -3}).status_code == 400
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
    """(engine calls, rows) of the render API so far."""
    count = re.search(r'ganforge_engine_batch_rows_count\{api="render"\} (\S+)', metrics)
    total = re.search(r'ganforge_engine_batch_rows_sum\{api="render"\} (\S+)', metrics)
    return float(count.group(1)), float(total.group(1))


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

    async def burst(n: int):
        async with httpx.AsyncClient(base_url=server.url, headers=AUTH, timeout=120) as c:
            for i in range(24):  # let BentoML's batcher finish its warm-up phase
                await c.post(*request(i)[:1], json=request(i)[1])
            before = _batches((await c.get("/metrics")).text)
            together = await asyncio.gather(
                *(c.post(path, json=body) for path, body in map(request, range(n)))
            )
            after = _batches((await c.get("/metrics")).text)
            alone = [await c.post(path, json=body) for path, body in map(request, range(n))]
        return together, alone, before, after

    together, alone, before, after = asyncio.run(burst(48))
    assert all(r.status_code == 200 for r in together + alone), [
        (r.status_code, r.text[:200]) for r in together + alone if r.status_code != 200
    ]
    calls, rows = after[0] - before[0], after[1] - before[1]
    assert rows == 48 and calls < rows, f"{rows} images in {calls} engine calls: no batching"
    for t, a in zip(together, alone):
        assert t.json()["images"][0]["png"] == a.json()["images"][0]["png"]
        assert t.json()["images"][0]["seed"] == a.json()["images"][0]["seed"]


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
