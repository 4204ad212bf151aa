"""Merge the engine rows of concurrent requests into one engine call (asyncio, numpy).

Every call from the public service to the engine is an HTTP request to another process, which
costs far more CPU than running a small generator on one more row. So while engine calls are in
flight, rows of newly arrived requests wait here and leave together as one call; BentoML's
adaptive batching in the engine then merges the calls of every public worker. There is no timer:
a lone request leaves at once, and under load the batch grows to what arrived during one call.
Each row is computed independently, so merging never changes an image.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import numpy as np


class Coalescer:
    """``await coalescer(rows)`` -> the engine's output rows for ``rows``."""

    def __init__(
        self,
        call: Callable[[np.ndarray], Awaitable[np.ndarray]],
        max_rows: int = 64,
        max_inflight: int = 2,
    ):
        self.call, self.max_rows, self.max_inflight = call, max_rows, max_inflight
        self.pending: list[tuple[np.ndarray, asyncio.Future]] = []
        self.inflight = 0
        self._scheduled = False

    async def __call__(self, rows: np.ndarray) -> np.ndarray:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.pending.append((rows, future))
        if not self._scheduled:  # let every request of this loop iteration join first
            self._scheduled = True
            loop.call_soon(self._dispatch)
        return await future

    def _dispatch(self) -> None:
        self._scheduled = False
        while self.pending and self.inflight < self.max_inflight:
            jobs, size = [], 0
            while self.pending and (not jobs or size + len(self.pending[0][0]) <= self.max_rows):
                job = self.pending.pop(0)
                jobs.append(job)
                size += len(job[0])
            self.inflight += 1
            asyncio.ensure_future(self._run(jobs))

    async def _run(self, jobs: list[tuple[np.ndarray, asyncio.Future]]) -> None:
        try:
            rows = jobs[0][0] if len(jobs) == 1 else np.concatenate([r for r, _ in jobs])
            out = await self.call(rows)
            start = 0
            for r, future in jobs:
                if not future.done():
                    future.set_result(out[start : start + len(r)])
                start += len(r)
        except Exception as exc:  # an engine failure fails the requests that were in the call
            for _, future in jobs:
                if not future.done():
                    future.set_exception(exc)
        finally:
            self.inflight -= 1
            self._dispatch()
