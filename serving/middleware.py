"""ASGI middleware for the public service: API-key auth, a request-body size limit, and the
error body for unknown paths.

BentoML has no body limit of its own, and its handlers read the whole body before validating, so
the limit is enforced here, before any handler runs. BentoML's router answers an unknown path with
a plain-text 404; :class:`NotFoundMiddleware` gives it the API's error body. All answer with
serving/errors.py's body. They are added once, with ``add_asgi_middleware`` (serving/service.py), so
they run inside BentoML's chain for every route.
"""

from __future__ import annotations

import hmac

from serving.errors import ErrorResponse
from serving.routes import (
    OPEN_PATHS,  # the probes and the playground's files (no data in them)
    ROUTES,
)


class ApiKeyMiddleware:
    """Every path except the probes needs ``Authorization: Bearer <key>`` (constant-time check)."""

    def __init__(self, app, api_key: str | None = None):
        self.app = app
        if api_key is None:
            from serving.config import current

            api_key = current().api_key or ""
        key = api_key
        self.key = key.encode() if key else None

    async def __call__(self, scope, receive, send):
        if self.key is None or scope["type"] != "http" or scope.get("path") in OPEN_PATHS:
            return await self.app(scope, receive, send)
        given = b""
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                given = value
                break
        scheme, _, token = given.partition(b" ")
        if scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.key):
            return await self.app(scope, receive, send)
        reply = ErrorResponse(
            401,
            "missing or wrong API key: send 'Authorization: Bearer <key>'",
            "Authorization",
            headers={"WWW-Authenticate": "Bearer"},
        )
        await reply(scope, receive, send)


class BodyLimitMiddleware:
    """Answer 413 to a request body larger than ``max_bytes`` (declared or streamed)."""

    def __init__(self, app, max_bytes: int | None = None):
        if max_bytes is None:
            from serving.config import current

            max_bytes = current().limits.max_body_bytes
        self.app, self.max_bytes = app, max_bytes

    async def _too_large(self, send, size: str) -> None:
        message = f"request body {size} is larger than the {self.max_bytes}-byte limit"
        await ErrorResponse(413, message, "body")(None, None, send)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.max_bytes:
                    return await self._too_large(send, f"of {declared} bytes")
        # Chunked or undeclared bodies: read up to the limit here, then replay them.
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return await self.app(scope, _replay(receive, [], message), send)
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_bytes:
                return await self._too_large(send, "of more than that")
            chunks.append(body)
            more = message.get("more_body", False)
        return await self.app(scope, _replay(receive, chunks, None), send)


def _replay(original, chunks: list[bytes], first: dict | None):
    """A ``receive`` that hands the already-read body (or message) over once, then defers to the
    original one, so disconnect detection still works."""
    pending = (
        [first]
        if first is not None
        else [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]
    )

    async def receive():
        if pending:
            return pending.pop()
        return await original()

    return receive


class NotFoundMiddleware:
    """A 404 that BentoML's router answers in plain text (a path nobody serves) becomes the API's
    JSON error naming the path and the routes there are. JSON 404s (an unknown model) pass."""

    def __init__(self, app):
        self.app = app
        self.paths = ", ".join(sorted({r.path for r in ROUTES if r.documented}))

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        swallowed = False

        async def send_or_replace(message):
            nonlocal swallowed
            if message["type"] == "http.response.start" and message["status"] == 404:
                ctype = dict(message.get("headers") or []).get(b"content-type", b"")
                swallowed = ctype.startswith(b"text/plain")
            if not swallowed:
                return await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                path = scope.get("path", "")
                reply = ErrorResponse(
                    404, f"no route {path!r}: the routes are {self.paths}", "path"
                )
                await reply(scope, receive, send)

        await self.app(scope, receive, send_or_replace)
