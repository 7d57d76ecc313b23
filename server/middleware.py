"""The ASGI middleware between the network and the routes: which host, which origin, which token, how large and
how slow a request body may be, and the security headers on every answer (app.py stacks them).

Each answers its refusal itself, in the app's one error shape, before any route runs.
"""
from __future__ import annotations

import asyncio
import hmac
import json
from urllib.parse import urlsplit

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.errors import error_body

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
# 'unsafe-eval': Plotly's WebGL traces (scattergl, via regl) compile their draw calls with Function();
# 'unsafe-inline' styles: Plotly injects <style> rules. Everything still comes from this origin only.
CSP = ("default-src 'self'; script-src 'self' 'unsafe-eval'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data: blob:; connect-src 'self'; worker-src 'self' blob:; object-src 'none'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


async def _send_error(send: Send, status: int, code: str, detail: str, headers: list | None = None) -> None:
    body = json.dumps(error_body(code, detail)).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


class SecurityHeaders:
    """Adds CSP, nosniff, frame, referrer and cross-origin policies to every HTTP response.

    `docs_csp` is the policy of the API documentation pages (their inline script's hash differs per app).
    Cross-Origin-Resource-Policy keeps other sites from embedding the images and downloads.
    """

    def __init__(self, app: ASGIApp, docs_csp: str):
        self.app, self.docs_csp = app, docs_csp

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        csp = self.docs_csp if scope["path"] == "/docs" else CSP

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []),
                                      (b"content-security-policy", csp.encode()),
                                      (b"x-content-type-options", b"nosniff"),
                                      (b"x-frame-options", b"DENY"),
                                      (b"referrer-policy", b"no-referrer"),
                                      (b"cross-origin-opener-policy", b"same-origin"),
                                      (b"cross-origin-resource-policy", b"same-origin")]
            await send(message)

        await self.app(scope, receive, with_headers)


class BodyLimit:
    """413 for request bodies over the limit, whether announced by Content-Length or streamed chunked, and 408
    for a body that stops arriving for `stall_s` seconds (a stalled client would otherwise hold its upload's
    memory and temp file forever).

    Both raise HTTPException from `receive`: FastAPI re-raises those from its body parsing, so the app's error
    handler answers them like any other error. Once the body is complete, `receive` only waits for the client
    to disconnect (an event stream does that for minutes): no timeout then.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, stall_s: float):
        self.app, self.max_bytes, self.stall_s = app, max_bytes, stall_s

    def _message(self) -> str:
        return (f"the request body is larger than {self.max_bytes // (1 << 20)} MiB; send a smaller upload or raise "
                f"DMLSCOPE_MAX_REQUEST_MB")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await _send_error(send, 413, "payload_too_large", self._message())
        seen, complete = 0, False

        async def counting_receive() -> Message:
            nonlocal seen, complete
            if complete:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.stall_s)
            except asyncio.TimeoutError:
                raise HTTPException(408, f"the request body stalled: nothing arrived for {self.stall_s:g} s after "
                                         f"{seen} bytes; send the upload again (DMLSCOPE_BODY_TIMEOUT_S sets how "
                                         f"long a pause is allowed)") from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                complete = not message.get("more_body", False)
                if seen > self.max_bytes:
                    raise HTTPException(413, self._message())
            return message

        await self.app(scope, counting_receive, send)


def host_name(host_header: str) -> str:
    """The name in a Host header, without its port, lower case, IPv6 without brackets ("[::1]:8000" → "::1")."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0].rstrip(".") if host.count(":") == 1 else host.rstrip(".")


class AllowedHosts:
    """400 for any request, reads included, addressed to a host name this server was not told it has.

    DNS rebinding: a page on attacker.example re-points that name at 127.0.0.1, and the browser then treats
    this server as attacker.example: same origin, so the Origin check passes and responses can be read. The
    browser still sends `Host: attacker.example`, which no allow-list here contains. Entries are exact names or
    '*.domain' (any subdomain); '*' alone turns the check off (behind a proxy that checks Host itself).
    """

    def __init__(self, app: ASGIApp, allowed: set[str]):
        self.app = app
        self.any = "*" in allowed
        self.exact = {h for h in allowed if not h.startswith("*")}
        self.suffixes = tuple(h[1:] for h in allowed if h.startswith("*."))

    def allows(self, name: str) -> bool:
        return self.any or name in self.exact or (bool(name) and name.endswith(self.suffixes))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            raw = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
            name = host_name(raw)[:253]  # the longest DNS name: a client's megabyte Host is not echoed back
            if not self.allows(name):
                if scope["type"] == "websocket":
                    return await send({"type": "websocket.close", "code": 1008})
                shown = f"host {name!r}" if name else "a request without a Host header"
                return await _send_error(
                    send, 400, "host_not_allowed",
                    f"this server does not answer to {shown} (a web page on another name that resolves to this "
                    f"machine is how DNS-rebinding attacks reach a local server); to serve it under that name, add "
                    f"it to DMLSCOPE_ALLOWED_HOSTS (dmlscope serve --allowed-hosts NAME)")
        await self.app(scope, receive, send)


class SameOrigin:
    """403 for a mutating request that a browser sent from another site (cross-site request forgery).

    A page anywhere on the web can make the browser POST a form (a dataset upload) or a bodiless request
    (cancel a run) to 127.0.0.1 without any CORS preflight, and a server on loopback usually has no token.
    Browsers name the sending page's origin on every such request; it must be this server's own (the Host it
    was addressed as) or one of DMLSCOPE_CORS_ORIGINS. Requests without an Origin (curl, scripts) pass.
    """

    def __init__(self, app: ASGIApp, allowed: list[str]):
        self.app, self.allowed = app, {o.rstrip("/") for o in allowed}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in SAFE_METHODS:
            headers = dict(scope["headers"])
            origin = headers.get(b"origin", b"").decode("latin-1")
            host = headers.get(b"host", b"").decode("latin-1")
            if origin and origin not in self.allowed and urlsplit(origin).netloc != host:
                return await _send_error(send, 403, "forbidden",
                                         f"a page at {origin} may not change data on this server (cross-site "
                                         f"request); use the app at its own address, or list that origin in "
                                         f"DMLSCOPE_CORS_ORIGINS")
        await self.app(scope, receive, send)


class BearerAuth:
    """When a token is set, every mutating request must carry it (compared in constant time).

    Every method but GET/HEAD/OPTIONS, on any path: a route added later cannot slip through a path filter.
    """

    def __init__(self, app: ASGIApp, token: str):
        self.app, self.expected = app, f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in SAFE_METHODS:
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                return await _send_error(send, 401, "unauthorized",
                                         "this server requires 'Authorization: Bearer <token>' (DMLSCOPE_API_TOKEN) "
                                         "for requests that change data",
                                         [(b"www-authenticate", b'Bearer realm="dmlscope"')])
        await self.app(scope, receive, send)
