"""Who may talk to the server: Host and Origin checks, the optional API key, and a body-size limit.

A server on 127.0.0.1 that runs tools is still reachable from every web page the user opens: a page
can send requests to ``http://127.0.0.1:8080`` (cross-site requests), or point its own domain name
at 127.0.0.1 (DNS rebinding) so that the browser treats the server as that page's origin. So:

* the ``Host`` header must name this server: ``localhost``, a loopback address, the bound address,
  any IP address when bound to all interfaces, or a name given with ``--allow-host``. A rebinding
  page's requests carry its own domain name and are refused;
* a request with an ``Origin`` header must come from the server's own page (same origin) or an
  origin given with ``--allow-origin``; only those get CORS headers (never ``*``);
* a ``POST`` body must be JSON (``Content-Type: application/json``), which a plain HTML form cannot
  send, and at most ``max_body`` bytes (413 otherwise);
* with ``--api-key``, every API route (``/v1/``, Ollama's ``/api/``, ``/tokenize``, ``/detokenize``,
  ``/metrics``) needs ``Authorization: Bearer <key>`` (the page asks for it); the page and ``/health``
  stay open.

Refusals use OpenAI's error object, and Ollama's ``{"error": "..."}`` on Ollama's ``/api/`` routes, so
each API's own clients read the message.

Written as plain ASGI middleware, so streamed responses and disconnects pass through untouched.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

LOOPBACK_NAMES = {"localhost", "localhost.localdomain"}
WILDCARD = {"0.0.0.0", "::", ""}
# The routes that need the API key when one is set (a path equal to one of these, or below one ending in "/").
PROTECTED = ("/v1/", "/api/", "/tokenize", "/detokenize", "/metrics")
OLLAMA_PREFIX = "/api/"
ASGIApp = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]


def _split_host(value: str) -> str:
    """``Host`` header -> the host part, lower-case, without port or IPv6 brackets."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:].split("]", 1)[0]
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def _is_loopback(host: str) -> bool:
    return host in LOOPBACK_NAMES or (_is_ip(host) and ipaddress.ip_address(host).is_loopback)


class Guard:
    """The checks above, in front of ``app``."""

    def __init__(self, app: ASGIApp, *, bind_host: str = "127.0.0.1", allow_hosts: Iterable[str] = (),
                 allow_origins: Iterable[str] = (), api_key: str | None = None, max_body: int = 1 << 20,
                 protected: Iterable[str] = PROTECTED) -> None:
        self.app = app
        self.protected = tuple(protected)
        self.bind_host = _split_host(bind_host)
        self.allow_hosts = {_split_host(h) for h in allow_hosts}
        self.allow_origins = {o.rstrip("/").lower() for o in allow_origins}
        self.api_key = api_key or None
        self.max_body = max_body

    # -- the checks -----------------------------------------------------------------------------------
    def host_ok(self, host: str) -> bool:
        if not host:
            return False
        if _is_loopback(host) or host == self.bind_host or host in self.allow_hosts:
            return True
        return self.bind_host in WILDCARD and _is_ip(host)

    def origin_ok(self, origin: str, host_header: str, scheme: str) -> bool:
        origin = origin.rstrip("/").lower()
        if origin in self.allow_origins:
            return True
        parts = urlsplit(origin)
        return parts.scheme == scheme and parts.netloc == host_header.strip().lower()

    def needs_key(self, path: str) -> bool:
        return any(path.startswith(p) if p.endswith("/") else path == p for p in self.protected)

    def key_ok(self, authorization: str) -> bool:
        if self.api_key is None:
            return True
        scheme, _, token = authorization.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self.api_key.encode())

    # -- ASGI -----------------------------------------------------------------------------------------
    async def __call__(self, scope: dict, receive: Callable[[], Awaitable[dict]],
                       send: Callable[[dict], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        path = scope.get("path", "")
        ollama = path.startswith(OLLAMA_PREFIX)
        host_header = headers.get("host", "")
        host = _split_host(host_header)
        if not self.host_ok(host):
            await _error(send, 403, f"Host {host_header!r} is not this server's name; start it with "
                                    f"--allow-host {host or 'NAME'} to accept it", "host_not_allowed",
                         ollama=ollama)
            return
        origin = headers.get("origin")
        cors: list[tuple[bytes, bytes]] = []
        if origin is not None:
            if not self.origin_ok(origin, host_header, scope.get("scheme", "http")):
                await _error(send, 403, f"requests from the web page {origin!r} are not allowed; start the "
                                        f"server with --allow-origin {origin} to allow that page",
                             "origin_not_allowed", ollama=ollama)
                return
            cors = [(b"access-control-allow-origin", origin.encode("latin-1")), (b"vary", b"Origin")]
        method = scope.get("method", "GET")
        if method == "OPTIONS" and origin is not None:  # a preflight from an allowed origin
            await send({"type": "http.response.start", "status": 204, "headers": cors + [
                (b"access-control-allow-methods", b"GET, POST, OPTIONS"),
                (b"access-control-allow-headers", b"authorization, content-type"),
                (b"access-control-max-age", b"600")]})
            await send({"type": "http.response.body", "body": b""})
            return
        if self.needs_key(path) and not self.key_ok(headers.get("authorization", "")):
            await _error(send, 401, "this server needs an API key: send 'Authorization: Bearer <key>'",
                         "invalid_api_key", extra=cors + [(b"www-authenticate", b"Bearer")], ollama=ollama)
            return
        if method == "POST":
            ctype = headers.get("content-type", "").split(";")[0].strip().lower()
            if ctype != "application/json":
                await _error(send, 415, f"the body must be JSON (Content-Type: application/json), got "
                                        f"{ctype or 'no Content-Type'!r}", "unsupported_media_type", extra=cors,
                             ollama=ollama)
                return
            body = await _read_body(receive, self.max_body, headers.get("content-length"))
            if body is None:
                await _error(send, 413, f"the request body is larger than {self.max_body:,} bytes",
                             "request_too_large", extra=cors, ollama=ollama)
                return
            receive = _replay(body, receive)
        if cors:
            send = _with_headers(send, cors)
        await self.app(scope, receive, send)


async def _read_body(receive: Callable[[], Awaitable[dict]], limit: int, declared: str | None) -> bytes | None:
    """The whole body, or None when it is (or says it is) over ``limit`` bytes."""
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        return None
    parts, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        parts.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(parts)


def _replay(body: bytes, receive: Callable[[], Awaitable[dict]]) -> Callable[[], Awaitable[dict]]:
    """A ``receive`` that hands the read body back once, then waits for the real disconnect."""
    sent = False

    async def again() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return again


def _with_headers(send: Callable[[dict], Awaitable[None]], extra: list[tuple[bytes, bytes]]) -> Callable:
    async def wrapped(message: dict) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": list(message.get("headers", [])) + extra}
        await send(message)

    return wrapped


async def _error(send: Callable[[dict], Awaitable[None]], status: int, message: str, code: str,
                 extra: list[tuple[bytes, bytes]] | None = None, ollama: bool = False) -> None:
    body = json.dumps({"error": message} if ollama else error_body(message, code)).encode()
    log.info("refused (%d): %s", status, message)
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())] + (extra or [])})
    await send({"type": "http.response.body", "body": body})


def error_body(message: str, code: str, param: str | None = None, kind: str = "invalid_request_error") -> dict[str, Any]:
    """OpenAI's error object."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}
