"""A tiny local HTTP server with JSON endpoints, so http_request and web_search run for real offline.

Endpoints (all GET unless noted, all JSON):

* ``/weather?city=Paris``: deterministic weather for a city (the same city always gets the same numbers);
* ``/time``: the server's clock as ISO 8601 UTC and Unix seconds (a fixed clock can be passed in);
* ``/echo``: GET echoes the query parameters, POST echoes the JSON (or text) body;
* ``/search?q=...&n=5``: ranks :data:`codette.tools.web.OFFLINE_PAGES` (the web_search endpoint shape).

Usage::

    with FixtureServer() as server:
        toolbox = Toolbox(ws, search_endpoint=server.url("/search"))
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from codette.tools.web import rank_pages

log = logging.getLogger(__name__)

CONDITIONS = ["sunny", "partly cloudy", "cloudy", "light rain", "rain", "windy", "foggy", "snow"]
MAX_BODY_BYTES = 1024 * 1024


def fake_weather(city: str) -> dict[str, Any]:
    """Stable pseudo-weather derived from a hash of the city name (not real data; says so)."""
    h = hashlib.sha256(city.strip().lower().encode("utf-8")).digest()
    return {
        "city": city,
        "temperature_c": round(-5 + h[0] / 255 * 35, 1),
        "humidity_pct": 30 + h[1] % 61,
        "wind_kmh": h[2] % 41,
        "condition": CONDITIONS[h[3] % len(CONDITIONS)],
        "note": "fixture data, not a real forecast",
    }


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("fixture server: " + format, *args)

    def _send(self, status: int, payload: Any) -> None:
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _route(self) -> tuple[str, dict[str, str]]:
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        return parts.path.rstrip("/") or "/", query

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        path, q = self._route()
        if path == "/weather":
            city = q.get("city", "").strip()
            if not city:
                self._send(400, {"error": "missing 'city' parameter"})
                return
            self._send(200, fake_weather(city))
        elif path == "/time":
            now = self.server.clock()
            iso = dt.datetime.fromtimestamp(now, dt.timezone.utc).isoformat(timespec="seconds")
            self._send(200, {"utc": iso.replace("+00:00", "Z"), "unix": int(now)})
        elif path == "/echo":
            self._send(200, {"method": "GET", "args": q})
        elif path == "/search":
            try:
                n = max(1, min(10, int(q.get("n", "5"))))
            except ValueError:
                self._send(400, {"error": "'n' must be an integer"})
                return
            self._send(200, {"query": q.get("q", ""), "results": rank_pages(q.get("q", ""), k=n)})
        elif path == "/":
            self._send(200, {"endpoints": ["/weather?city=", "/time", "/echo", "/search?q="]})
        else:
            self._send(404, {"error": f"no such endpoint: {path}"})

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        path, q = self._route()
        if path != "/echo":
            self._send(404, {"error": f"no such endpoint: {path}"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self._send(413, {"error": "body too large"})
            return
        raw = self.rfile.read(length).decode("utf-8", errors="replace")
        try:
            body: Any = json.loads(raw) if raw else None
            kind = "json"
        except json.JSONDecodeError:
            body, kind = raw, "text"
        self._send(200, {"method": "POST", "args": q, kind: body})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    clock: Callable[[], float]


class FixtureServer:
    """The server on 127.0.0.1 (port 0 = any free port) in a background thread; a context manager."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, clock: Callable[[], float] = time.time) -> None:
        self._httpd = _Server((host, port), _Handler)
        self._httpd.clock = clock
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        return str(self._httpd.server_address[0])

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def url(self, path: str = "/") -> str:
        return self.base_url + (path if path.startswith("/") else "/" + path)

    def start(self) -> FixtureServer:
        if self._thread is None:
            self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                            name="codette-fixture-server", daemon=True)
            self._thread.start()
            log.debug("fixture server listening on %s", self.base_url)
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> FixtureServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
