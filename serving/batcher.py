"""An asyncio micro-batcher: the rows of concurrent requests leave as one engine call.

Each serving worker holds the engine in-process. A request hands its rows (numpy arrays, one row
per image) to the batcher of the graph it needs and awaits its share of the result. While an
engine call runs on the worker's engine thread (ONNX Runtime releases the GIL, so the event loop
keeps accepting and encoding requests meanwhile), newly arrived rows wait; when the call returns
they leave together, up to ``max_rows``. There is no timer: a lone request leaves at once, and
under load a batch grows to what arrived during one call. Every graph is per-sample, so merging
never changes an image.

A small call (at most ``inline_rows`` rows) of a lone request (``alone()``: no other request is
in flight in this worker) runs on the event loop itself: on a CPU, handing a one-image call to the
engine thread and back costs about as much as the call (thread wake-ups both ways), and a lone
client waits for every microsecond of it. With other requests in flight the loop has their work to
do while the engine runs, so every call goes to the engine thread as above.

A failed engine call fails the requests that were in it with :class:`EngineError` and is logged
once (not once per request); the next call runs as usual.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Any

import numpy as np

from serving.errors import EngineError

log = logging.getLogger("ganforge.serving")
Arrays = tuple[Any, ...]  # numpy arrays with the row axis first, or None (an absent input)


def _join(parts: Sequence[Any]) -> Any:
    if parts[0] is None:
        return None
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


class MicroBatcher:
    """``await batcher(*inputs)`` -> the outputs of ``run(*joined_inputs)`` for these rows.

    ``run`` takes arrays with the row axis first (``None`` stays ``None``) and returns a tuple of
    arrays with the row axis first; it runs on ``executor``. ``observe(rows)`` sees each call's
    size (the batch-size metric).
    """

    def __init__(
        self,
        name: str,
        run: Callable[..., tuple[np.ndarray, ...]],
        executor: Executor,
        max_rows: int = 64,
        observe: Callable[[int], None] | None = None,
        inline_rows: int = 0,
        alone: Callable[[], bool] = lambda: True,
    ):
        self.name, self.run, self.executor = name, run, executor
        self.max_rows = max(1, int(max_rows))
        self.inline_rows = max(0, int(inline_rows))
        self.alone = alone
        self.observe = observe or (lambda rows: None)
        self.pending: list[tuple[int, Arrays, asyncio.Future]] = []
        self.busy = False
        self._scheduled = False
        self._task: asyncio.Task | None = None  # the loop keeps only weak references to tasks

    async def __call__(self, *inputs: Any) -> tuple[np.ndarray, ...]:
        rows = len(inputs[0])
        if (
            rows <= self.inline_rows
            and not (self.pending or self.busy or self._scheduled)
            and self.alone()
        ):  # nothing to merge with: run it now, without a trip round the loop
            self.observe(rows)
            try:
                return self.run(*inputs)
            except Exception as exc:
                raise self._error(rows, 1, exc) from None
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.pending.append((rows, inputs, future))
        if not self._scheduled and not self.busy:  # let this loop iteration's requests join
            self._scheduled = True
            loop.call_soon(self._dispatch)
        return await future

    def _take(self) -> list[tuple[int, Arrays, asyncio.Future]]:
        jobs, size = [], 0
        while self.pending and (not jobs or size + self.pending[0][0] <= self.max_rows):
            job = self.pending.pop(0)
            if job[2].done():  # the client went away
                continue
            jobs.append(job)
            size += job[0]
        return jobs

    def _dispatch(self) -> None:
        self._scheduled = False
        if self.busy:
            return
        jobs = self._take()
        if not jobs:
            return
        rows = sum(j[0] for j in jobs)
        if rows <= self.inline_rows and self.alone():
            self._finish(jobs, rows)
            if self.pending and not self._scheduled:
                self._scheduled = True
                asyncio.get_running_loop().call_soon(self._dispatch)
            return
        self.busy = True
        self._task = asyncio.ensure_future(self._run(jobs, rows))

    async def _run(self, jobs: list[tuple[int, Arrays, asyncio.Future]], rows: int) -> None:
        loop = asyncio.get_running_loop()
        try:
            inputs = self._inputs(jobs, rows)
            try:
                outputs = await loop.run_in_executor(self.executor, self.run, *inputs)
            except Exception as exc:
                self._fail(jobs, rows, exc)
                return
            self._deliver(jobs, outputs)
        except BaseException as exc:  # never leave a request waiting for an answer
            for _, _, future in jobs:
                if not future.done():
                    future.set_exception(EngineError(f"the engine call failed: {exc!r}"))
            raise
        finally:
            self.busy = False
            self._dispatch()

    def _finish(self, jobs, rows: int) -> None:
        """Run one call here, on the loop, and answer its requests."""
        try:
            outputs = self.run(*self._inputs(jobs, rows))
        except Exception as exc:
            self._fail(jobs, rows, exc)
            return
        self._deliver(jobs, outputs)

    def _inputs(self, jobs, rows: int) -> list[Any]:
        self.observe(rows)
        return [_join([j[1][i] for j in jobs]) for i in range(len(jobs[0][1]))]

    def _error(self, rows: int, requests: int, exc: Exception) -> EngineError:
        """ORT failure, device out of memory: logged once, one error for the call's requests."""
        log.error(
            "engine call %s on %d rows (%d requests) failed: %s: %s",
            self.name,
            rows,
            requests,
            type(exc).__name__,
            str(exc)[:500],
        )
        return EngineError(f"the engine failed on {self.name}: {type(exc).__name__}")

    def _fail(self, jobs, rows: int, exc: Exception) -> None:
        error = self._error(rows, len(jobs), exc)
        for _, _, future in jobs:
            if not future.done():
                future.set_exception(error)

    @staticmethod
    def _deliver(jobs, outputs: tuple[np.ndarray, ...]) -> None:
        start = 0
        for n, _, future in jobs:
            if not future.done():
                future.set_result(tuple(o[start : start + n] for o in outputs))
            start += n
