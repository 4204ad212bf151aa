"""A fix for a BentoML 1.4 defect that the server would otherwise carry (applied on import).

BentoML's ``TimeoutMiddleware`` (``bentoml._internal.server.http.traffic``, on every BentoML
service) arms ``loop.call_later(timeout, ...)`` for each request and never disarms it. The timer
handle keeps the request's future, bound method and context alive until it fires, ``timeout``
seconds later (300 s here), so memory grows with every request for five minutes: about 1 KB per
request, hundreds of MB at the request rates bench/serve_load.py drives. Measured on the public
worker: +4,100 live TimerHandle/Future/Context objects per 4,100 requests, and +2.5 MB RSS per
3,000 requests, until the first timers fire.

The same class has a second defect, fixed here too: a request whose app ends or raises before
sending anything waits the whole ``timeout`` (300 s) before the error reaches the server.

The replacement keeps BentoML's behaviour (a 504 JSON answer when the app has not started its
response within ``timeout``; after that the request runs to completion) and cancels the timer as
soon as it is no longer needed. It is installed only on the class this was measured on (the one
with ``_set_timer_out``); a later BentoML that changes the class is left alone, with a warning.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger("ganforge.serving")


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
            from starlette.responses import JSONResponse

            reply = JSONResponse(
                {"error": f"Not able to process the request in {self.timeout} seconds"},
                status_code=504,
            )
            await reply(scope, receive, send)
        return
    finally:
        timer.cancel()  # the fix: without this the handle lives for `timeout` seconds
    await task


def install() -> bool:
    """Replace ``TimeoutMiddleware.__call__`` if it is the leaking one; True when replaced."""
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
