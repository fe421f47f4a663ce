"""Request guards as pure ASGI middleware: the optional API key, the upload size limit, slow bodies.

Middleware rather than a route dependency so that every route is covered, including static files,
the viewer page and the OpenAPI docs. :class:`RedactKeyFilter` keeps ``?api_key=`` out of the access log.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from urllib.parse import parse_qs

from fastapi import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

COOKIE = "acmil_api_key"


class ApiKeyMiddleware:
    """Require the key in a header (``X-API-Key`` by default) or in the viewer's cookie; 401 otherwise.

    A browser cannot add headers to a page load or to image tiles, so ``GET /?api_key=KEY`` sets an
    HttpOnly cookie and redirects to ``/``; later requests from that browser carry the cookie.
    """

    def __init__(self, app: ASGIApp, api_key: str, header: str = "X-API-Key") -> None:
        self.app = app
        self.api_key = api_key.encode()
        self.header = header

    def _valid(self, supplied: str | None) -> bool:
        return supplied is not None and secrets.compare_digest(supplied.encode(), self.api_key)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        if self._valid(request.headers.get(self.header)) or self._valid(request.cookies.get(COOKIE)):
            await self.app(scope, receive, send)
            return
        query = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("api_key", [None])[0]
        if scope["path"] == "/" and self._valid(query):
            response = RedirectResponse("/", status_code=303)
            response.set_cookie(COOKIE, query, httponly=True, samesite="strict", secure=_https(scope))
            await response(scope, receive, send)
            return
        response = JSONResponse(
            {
                "detail": f"missing or invalid API key: send it in the {self.header} header "
                "(in a browser, open /?api_key=KEY once)"
            },
            status_code=401,
            headers={"WWW-Authenticate": "ApiKey"},
        )
        await response(scope, receive, send)


class UploadLimitMiddleware:
    """413 for POST bodies over ``max_bytes``: at once from Content-Length, else while streaming."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT"):
            await self.app(scope, receive, send)
            return
        length = Request(scope).headers.get("content-length")
        if length and length.isdigit() and int(length) > self.max_bytes:
            await self._reject(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                # FastAPI re-raises HTTPException from body parsing, so this becomes the response.
                raise HTTPException(413, self._message())
            return message

        await self.app(scope, counted, send)

    def _message(self) -> str:
        return f"upload larger than the limit of {self.max_bytes} bytes"

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        await JSONResponse({"detail": self._message()}, status_code=413)(scope, receive, send)


class SlowBodyMiddleware:
    """408 for request bodies that stall or trickle, so they cannot hold connections open indefinitely.

    Each piece of a body must arrive within ``idle_timeout_s``; once ``idle_timeout_s`` has passed since
    the first read, the body must also have averaged ``min_rate`` bytes/s (1 byte/s fails, a slow link
    does not).
    """

    def __init__(self, app: ASGIApp, idle_timeout_s: float, min_rate: int) -> None:
        self.app = app
        self.idle_timeout_s = idle_timeout_s
        self.min_rate = min_rate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        started: float | None = None
        seen = 0

        async def timed() -> Message:
            nonlocal started, seen
            now = time.monotonic()
            started = now if started is None else started
            try:
                message = await asyncio.wait_for(receive(), self.idle_timeout_s)
            except asyncio.TimeoutError:
                raise HTTPException(408, f"request body stalled: no data for {self.idle_timeout_s:g} s") from None
            seen += len(message.get("body", b""))
            elapsed = time.monotonic() - started
            if message.get("more_body") and elapsed > self.idle_timeout_s and seen < self.min_rate * elapsed:
                raise HTTPException(
                    408,
                    f"request body too slow: {seen} bytes in {elapsed:.0f} s (at least {self.min_rate} bytes/s needed)",
                )
            return message

        await self.app(scope, timed, send)


def _https(scope: Scope) -> bool:
    """Whether the client reached us over HTTPS: the scheme, or a proxy's X-Forwarded-Proto."""
    if scope.get("scheme") == "https":
        return True
    for name, value in scope.get("headers", []):
        if name == b"x-forwarded-proto":
            return value.split(b",")[0].strip().lower() == b"https"
    return False


_KEY_IN_QUERY = re.compile(r"(?i)([?&]api_key=)[^&\s\"]*")


class RedactKeyFilter(logging.Filter):
    """Replace the value of ``api_key=`` in log records (uvicorn's access log prints the query string)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any("api_key=" in str(arg).lower() for arg in record.args):
            record.args = tuple(_KEY_IN_QUERY.sub(r"\1***", a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str) and "api_key=" in record.msg.lower():
            record.msg = _KEY_IN_QUERY.sub(r"\1***", record.msg)
        return True


def install_log_redaction() -> None:
    """Add :class:`RedactKeyFilter` to uvicorn's loggers once (call after uvicorn configured logging)."""
    for name in ("uvicorn.access", "uvicorn.error"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactKeyFilter) for f in logger.filters):
            logger.addFilter(RedactKeyFilter())
