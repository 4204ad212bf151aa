"""The API fast path (serving/fastpath.py): what BentoML's layers did for the API routes still happens.

In process (the worker's real ASGI app, ``GanService.to_asgi()``), both with the fast path and
without it, the API routes land in BentoML's own request metrics under the same series; unit
tests of :class:`FastPath` cover the timeout, an unexpected exception and the access log.
"""

from __future__ import annotations

import asyncio
import logging
import re

import pytest

from serving.fastpath import FastPath
from tests.serving.conftest import in_process, serving_env


def _series(text: str, name: str, endpoint: str, code: int) -> float:
    """The value of BentoML's ``name`` series for ``endpoint`` and status ``code`` (0 if absent)."""
    total = 0.0
    for labels, value in re.findall(rf"^{name}\{{([^}}]*)\}} (\S+)$", text, re.M):
        if f'endpoint="{endpoint}"' in labels and f'http_response_code="{code}"' in labels:
            total += float(value)
    return total


@pytest.mark.parametrize("fast", ["1", "0"])
def test_api_requests_are_counted_in_bentomls_series_with_and_without_the_fast_path(
    bundle_dirs, names, fast
):
    env = serving_env([bundle_dirs["dcgan"]], GAN_FASTPATH=fast)
    with in_process(env) as c:
        assert isinstance(c.app, FastPath) == (fast == "1")
        before = c.get("/metrics").text
        for seed in range(3):
            assert (
                c.post("/generate", json={"model": names["dcgan"], "seed": seed}).status_code == 200
            )
        assert c.post("/generate", json={"model": names["dcgan"], "n": 0}).status_code == 422
        assert c.get("/models").status_code == 200
        after = c.get("/metrics").text
    for name in ("bentoml_service_request_total", "bentoml_service_request_duration_seconds_count"):
        grew = {
            (path, code): _series(after, name, path, code) - _series(before, name, path, code)
            for path, code in (("/generate", 200), ("/generate", 422), ("/models", 200))
        }
        assert grew == {("/generate", 200): 3, ("/generate", 422): 1, ("/models", 200): 1}, name
    assert re.search(r'bentoml_service_request_in_progress\{[^}]*endpoint="/generate"', after)


def _run(app, path: str = "/generate"):
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "scheme": "http", "headers": [],
             "client": ("127.0.0.1", 4321)}  # fmt: skip
    asyncio.run(app(scope, receive, send))
    return sent


class _Outer:
    """Stands for BentoML's app: records what reached it; an empty built stack."""

    middleware_stack = object()

    def __init__(self):
        self.seen = []

    async def __call__(self, scope, receive, send):
        self.seen.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"outer"})


def test_a_request_with_no_response_in_time_gets_504_and_one_that_started_finishes():
    async def slow(scope, receive, send):
        await asyncio.sleep(5)

    sent = _run(FastPath(_Outer(), slow, frozenset({"/generate"}), timeout=0.05))
    assert sent[0]["status"] == 504
    assert b"0.05 seconds" in sent[1]["body"]

    async def streaming(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await asyncio.sleep(0.1)  # longer than the timeout, after the response started
        await send({"type": "http.response.body", "body": b"done"})

    sent = _run(FastPath(_Outer(), streaming, frozenset({"/generate"}), timeout=0.05))
    assert [m.get("status") for m in sent] == [200, None] and sent[1]["body"] == b"done"


def test_an_unexpected_error_answers_500_json_and_is_logged(caplog):
    async def broken(scope, receive, send):
        raise RuntimeError("boom")

    caplog.set_level(logging.ERROR, logger="ganforge.serving")
    sent = _run(FastPath(_Outer(), broken, frozenset({"/generate"}), timeout=None))
    assert sent[0]["status"] == 500
    assert b'"error"' in sent[1]["body"]
    assert any("boom" in (r.exc_text or "") or r.exc_info for r in caplog.records)


def test_other_paths_go_to_bentomls_app_and_api_paths_do_not():
    async def api(scope, receive, send):
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b"api"})

    outer = _Outer()
    app = FastPath(outer, api, frozenset({"/generate"}), timeout=None)
    assert _run(app, "/metrics")[1]["body"] == b"outer"
    assert _run(app, "/generate")[1]["body"] == b"api"
    assert outer.seen == ["/metrics"]


def test_the_access_log_line_is_bentomls(caplog):
    class AccessLogMiddleware:  # found by class name in BentoML's built stack
        app = None

    class Outer(_Outer):
        middleware_stack = AccessLogMiddleware()

    async def api(scope, receive, send):
        await send({"type": "http.response.start", "status": 418, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    caplog.set_level(logging.INFO, logger="bentoml.access")
    _run(FastPath(Outer(), api, frozenset({"/generate"}), timeout=None))
    (line,) = [r.getMessage() for r in caplog.records if r.name == "bentoml.access"]
    assert re.fullmatch(
        r"127\.0\.0\.1:4321 \(scheme=http,method=POST,path=/generate\) \(status=418\) [\d.]+ms",
        line,
    )


def test_a_timeout_error_of_the_handler_itself_is_a_500_not_the_request_timeout():
    async def raises(scope, receive, send):
        raise TimeoutError("the handler's own")

    sent = _run(FastPath(_Outer(), raises, frozenset({"/generate"}), timeout=30))
    assert sent[0]["status"] == 500
