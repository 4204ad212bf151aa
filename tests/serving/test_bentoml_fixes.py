"""serving.bentoml_fixes: BentoML's per-request timeout timer is disarmed, timeouts still work."""

from __future__ import annotations

import asyncio
import json

from serving import bentoml_fixes

bentoml_fixes.install()
from bentoml._internal.server.http.traffic import TimeoutMiddleware  # noqa: E402


def _app(delay_before_start: float = 0.0, delay_after_start: float = 0.0):
    async def app(scope, receive, send):
        await asyncio.sleep(delay_before_start)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await asyncio.sleep(delay_after_start)
        await send({"type": "http.response.body", "body": b"ok"})

    return app


async def _call(mw) -> tuple[int, bytes]:
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    await mw({"type": "http", "method": "POST", "path": "/generate"}, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, body


def test_install_patches_bentoml_class_once():
    assert bentoml_fixes.install() is True
    assert getattr(TimeoutMiddleware.__call__, "_ganforge_fixed", False)
    assert bentoml_fixes.install() is True  # idempotent


def test_every_request_timer_is_cancelled():
    """The defect: one armed 300 s timer per request. After the fix none is left armed."""

    async def main():
        loop = asyncio.get_running_loop()
        handles = []
        original = loop.call_later

        def recording_call_later(delay, callback, *args, **kwargs):
            handle = original(delay, callback, *args, **kwargs)
            if delay == 300:
                handles.append(handle)
            return handle

        loop.call_later = recording_call_later
        mw = TimeoutMiddleware(_app(), timeout=300)
        results = await asyncio.gather(*(_call(mw) for _ in range(200)))
        loop.call_later = original
        return results, handles

    results, handles = asyncio.run(main())
    assert all(r == (200, b"ok") for r in results)
    assert len(handles) == 200
    assert all(h.cancelled() for h in handles), "a request left its timeout timer armed"


def test_timeout_still_answers_504_and_cancels_the_handler():
    async def main():
        state = {"cancelled": False}

        async def slow(scope, receive, send):
            try:
                await asyncio.sleep(5)
            except asyncio.CancelledError:
                state["cancelled"] = True
                raise

        mw = TimeoutMiddleware(slow, timeout=0.05)
        status, body = await _call(mw)
        await asyncio.sleep(0)  # let the cancellation land
        return status, body, state["cancelled"]

    status, body, was_cancelled = asyncio.run(main())
    assert status == 504
    assert "0.05 seconds" in json.loads(body)["error"]
    assert was_cancelled


def test_a_started_response_is_not_cut_by_the_timeout():
    """As in BentoML: the timeout covers the time to the first response message only."""
    status, body = asyncio.run(_call(TimeoutMiddleware(_app(0, 0.1), timeout=0.05)))
    assert (status, body) == (200, b"ok")


def test_non_http_scopes_pass_through():
    scope_type = "lifespan"
    seen = []

    async def app(scope, receive, send):
        seen.append(scope["type"])

    asyncio.run(TimeoutMiddleware(app, timeout=1)({"type": scope_type}, None, None))
    assert seen == [scope_type]


def test_the_service_module_installs_the_fix_in_every_worker():
    """Each BentoML worker imports serving.service: that import alone must install the fix."""
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import serving.service\n"
        "from bentoml._internal.server.http.traffic import TimeoutMiddleware as T\n"
        "print(getattr(T.__call__, '_ganforge_fixed', False))\n"
    )
    repo = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "True"


def test_an_app_that_fails_before_answering_does_not_wait_for_the_timeout():
    """BentoML's class waited the whole timeout (300 s) when the app raised before sending."""
    import time

    import pytest

    async def broken(scope, receive, send):
        raise RuntimeError("boom")

    async def silent(scope, receive, send):
        return None

    t0 = time.perf_counter()
    with pytest.raises(RuntimeError, match="boom"):
        asyncio.run(TimeoutMiddleware(broken, timeout=30)({"type": "http"}, None, None))
    asyncio.run(TimeoutMiddleware(silent, timeout=30)({"type": "http"}, None, None))
    assert time.perf_counter() - t0 < 5


def test_another_bentoml_version_is_left_alone_with_a_warning(monkeypatch, caplog):
    import bentoml

    monkeypatch.setattr(bentoml, "__version__", "1.5.0")
    assert bentoml_fixes.install() is False
    assert "1.5.0" in caplog.text and "not applied" in caplog.text


def test_the_504_body_has_the_api_error_shape():
    async def slow(scope, receive, send):
        await asyncio.sleep(5)

    status, body = asyncio.run(_call(TimeoutMiddleware(slow, timeout=0.05)))
    assert status == 504
    assert json.loads(body) == {
        "error": "Not able to process the request in 0.05 seconds",
        "field": None,
    }
