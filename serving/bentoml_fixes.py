"""Fix for a defect of BentoML's request timeout, applied on import (the one BentoML patch here).

Applies to: BentoML 1.4.x, checked on 1.4.40 (the version installed here). Only the class this
was written for is patched: ``bentoml._internal.server.http.traffic.TimeoutMiddleware`` with its
``_set_timer_out`` method, which every BentoML service puts in front of its routes when
``traffic.timeout`` is set. Another BentoML version, or a changed class, is left alone with a
warning; drop this module once upstream carries the fix.

Upstream behaviour it corrects (written so that it can be sent as an issue/patch to BentoML):

1. ``TimeoutMiddleware.__call__`` arms ``loop.call_later(timeout, ...)`` for every request and
   never cancels the handle. The handle keeps the request's future, the bound method and its
   context alive until it fires, ``timeout`` seconds later (300 s by default), so a busy server's
   memory grows with its request rate for that long: about 1 KB per request (measured: +4,100 live
   TimerHandle/Future/Context objects per 4,100 requests; +2.5 MB RSS per 3,000 requests).
2. A request whose app ends or raises before sending any message waits the whole ``timeout``
   before the error reaches the server, instead of failing at once.

The replacement keeps BentoML's contract: 504 with BentoML's message when the app has not started
its response within ``timeout``; after the response has started the request runs to completion.
It cancels the timer as soon as the response starts or the app ends, and lets an app that ends
without answering end the request at once. tests/serving/test_bentoml_fixes.py checks each point.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from serving.errors import ErrorResponse

log = logging.getLogger("ganforge.serving")
APPLIES_TO = "1.4."  # the BentoML versions whose TimeoutMiddleware this replaces


async def _timeout_call(self: Any, scope: dict, receive: Any, send: Any) -> None:
    if scope["type"] not in ("http", "websocket"):
        return await self.app(scope, receive, send)
    loop = asyncio.get_running_loop()
    started = loop.create_future()  # resolved when the app sends its first message

    def expire() -> None:
        if not started.done():
            started.set_exception(asyncio.TimeoutError())

    timer = loop.call_later(self.timeout, expire)

    async def send_and_mark(message: Any) -> None:
        if not started.done():
            started.set_result(None)
        await send(message)

    task = asyncio.ensure_future(self.app(scope, receive, send_and_mark))
    # Also BentoML's: an app that ends (or fails) without sending anything left the request
    # waiting for the full timeout. Its end counts as "started" here; `await task` re-raises.
    task.add_done_callback(lambda _: started.done() or started.set_result(None))
    try:
        await started
    except asyncio.TimeoutError:
        if task.cancel():
            # BentoML's message; the body in ganforge's error shape (upstream: {"error"} only).
            message = f"Not able to process the request in {self.timeout} seconds"
            await ErrorResponse(504, message, None)(scope, receive, send)
        return
    finally:
        timer.cancel()  # the fix: without this the handle lives for `timeout` seconds
    await task


def install() -> bool:
    """Replace ``TimeoutMiddleware.__call__`` if it is the leaking one; True when replaced."""
    import bentoml

    if not bentoml.__version__.startswith(APPLIES_TO):
        log.warning("BentoML %s: the timer-leak fix (for %s) is not applied", bentoml.__version__,
                    APPLIES_TO)  # fmt: skip
        return False
    try:
        from bentoml._internal.server.http import traffic
    except ImportError:  # pragma: no cover - a BentoML without the module has no such defect
        return False
    cls = getattr(traffic, "TimeoutMiddleware", None)
    if cls is None or getattr(cls.__call__, "_ganforge_fixed", False):
        return cls is not None
    if not hasattr(cls, "_set_timer_out"):  # not the 1.4 class this fix was written for
        log.warning("BentoML's TimeoutMiddleware has changed: the timer-leak fix is not applied")
        return False
    _timeout_call._ganforge_fixed = True  # type: ignore[attr-defined]
    cls.__call__ = _timeout_call
    return True
