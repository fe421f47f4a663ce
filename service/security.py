"""Request guards as pure ASGI middleware: the optional API key and the upload size limit.

Middleware rather than a route dependency so that every route is covered, including static files,
the viewer page and the OpenAPI docs.
"""

from __future__ import annotations

import secrets
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
            response.set_cookie(COOKIE, query, httponly=True, samesite="strict")
            await response(scope, receive, send)
            return
        response = JSONResponse(
            {"detail": f"missing or invalid API key: send it in the {self.header} header "
                       "(in a browser, open /?api_key=KEY once)"},
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
