"""http_request and web_search: network tools that can only reach allowlisted ``host:port`` pairs.

The allowlist admits nothing by default: only the ``host:port`` entries the user configured (a bare
``host`` means its scheme's default port, ``host:*`` any port). The check happens on the parsed URL
before any connection or DNS lookup, proxies from the environment are ignored, redirects are not
followed, and the caller cannot set ``Host`` or other framing headers, so nothing leaves the
allowlist. Responses are streamed: at most :data:`MAX_RESPONSE_BYTES` decoded bytes are kept (a
gzip bomb is cut off after that many inflated bytes), and one deadline covers the whole exchange.
Without a configured search endpoint, web_search ranks :data:`OFFLINE_PAGES`, a small recorded
corpus shipped with the module, and says ``"source": "offline-fixture"``.
"""

from __future__ import annotations

import codecs
import logging
import re
import socket
import threading
import time
import zlib
from collections.abc import Iterable
from typing import Any

import httpx

from codette.tools import limits

from codette.errors import CodetteError
from codette.tools.base import ToolFailure

log = logging.getLogger(__name__)

DEFAULT_ALLOWED_HOSTS: tuple[str, ...] = ()  # nothing until the user configures host:port entries
DEFAULT_HTTP_TIMEOUT_S = 5.0
MAX_BODY_CHARS = 8000
MAX_RESPONSE_BYTES = 4 * MAX_BODY_CHARS + 4   # decoded bytes read from a response; the rest is dropped
MAX_SEARCH_RESPONSE_BYTES = 256 * 1024
MAX_SNIPPET_CHARS = 500
MAX_TITLE_CHARS = 200
MAX_URL_CHARS = 500
MAX_SEARCH_RESULT_CHARS = 8000                # all results of one search together
# Headers that frame the request or pick its target: set by the client, never by the caller.
FORBIDDEN_HEADERS = frozenset({
    "host", "content-length", "transfer-encoding", "connection", "upgrade", "te", "trailer", "keep-alive",
    "proxy-authorization", "proxy-connection", "expect", "accept-encoding", ":authority"})
_DEFAULT_PORTS = {"http": 80, "https": 443}
# No "date": results must be reproducible for training data.
RESPONSE_HEADERS = ("content-type", "content-length", "location", "last-modified", "etag")

# A recorded corpus for offline search: (title, url, snippet). Facts are standard textbook ones.
OFFLINE_PAGES: list[dict[str, str]] = [
    {"title": "Rotary position embeddings (RoPE)",
     "url": "https://arxiv.org/abs/2104.09864",
     "snippet": "RoFormer introduced rotary position embeddings: query and key vectors are rotated by an angle "
                "proportional to their position, so attention scores depend on relative positions."},
    {"title": "GGUF file format",
     "url": "https://github.com/ggml-org/ggml/blob/master/docs/gguf.md",
     "snippet": "GGUF is the binary file format used by llama.cpp and ggml to store a model's tensors, "
                "tokenizer and metadata in one file, with support for quantized weights."},
    {"title": "llama.cpp",
     "url": "https://github.com/ggml-org/llama.cpp",
     "snippet": "llama.cpp runs large language model inference in C/C++ on CPUs and GPUs, loading models "
                "stored in the GGUF format."},
    {"title": "Ollama",
     "url": "https://ollama.com",
     "snippet": "Ollama runs language models locally; a Modelfile names a GGUF model, its chat template and "
                "its parameters."},
    {"title": "History of the telescope",
     "url": "https://en.wikipedia.org/wiki/History_of_the_telescope",
     "snippet": "The first telescopes appeared in the Netherlands in 1608; Galileo improved the design in 1609 "
                "and Isaac Newton built the first practical reflecting telescope in 1668."},
    {"title": "Transformer (deep learning architecture)",
     "url": "https://en.wikipedia.org/wiki/Transformer_(deep_learning_architecture)",
     "snippet": "A transformer model is a neural network built from self-attention and feed-forward layers; it "
                "was introduced in the 2017 paper Attention Is All You Need."},
    {"title": "Waggle dance: how bees communicate",
     "url": "https://en.wikipedia.org/wiki/Waggle_dance",
     "snippet": "Honey bees communicate the direction and distance of food with the waggle dance: the angle of "
                "the run shows the direction relative to the sun and its length the distance."},
    {"title": "Why the sky is blue: Rayleigh scattering",
     "url": "https://en.wikipedia.org/wiki/Rayleigh_scattering",
     "snippet": "The sky is blue because air molecules scatter short (blue) wavelengths of sunlight much more "
                "strongly than long (red) ones; scattering grows with the inverse fourth power of wavelength."},
    {"title": "Tides",
     "url": "https://en.wikipedia.org/wiki/Tide",
     "snippet": "Tides are the rise and fall of sea levels caused by the gravity of the Moon and the Sun and the "
                "rotation of the Earth; most coasts see two high tides a day."},
    {"title": "Entropy",
     "url": "https://en.wikipedia.org/wiki/Entropy",
     "snippet": "Entropy measures the number of microscopic states compatible with a system's macroscopic state; "
                "the second law of thermodynamics says the entropy of an isolated system never decreases."},
    {"title": "How vaccines train the immune system",
     "url": "https://en.wikipedia.org/wiki/Vaccine",
     "snippet": "A vaccine exposes the immune system to a harmless form or part of a pathogen, so it builds "
                "antibodies and memory cells that respond quickly to a later infection."},
    {"title": "How solar panels work",
     "url": "https://en.wikipedia.org/wiki/Solar_panel",
     "snippet": "Solar panels are made of photovoltaic cells: light knocks electrons loose in a semiconductor "
                "such as silicon, and the cell's electric field turns them into a direct current."},
    {"title": "Newton's laws of motion",
     "url": "https://en.wikipedia.org/wiki/Newton%27s_laws_of_motion",
     "snippet": "Newton's three laws: a body keeps its velocity unless a net force acts, force equals mass "
                "times acceleration (F = ma), and every action has an equal and opposite reaction."},
    {"title": "Leonardo da Vinci",
     "url": "https://en.wikipedia.org/wiki/Leonardo_da_Vinci",
     "snippet": "Leonardo da Vinci (1452-1519) was an Italian painter, engineer and inventor whose notebooks "
                "combine anatomy, flying machines and studies of water."},
    {"title": "Byte-pair encoding",
     "url": "https://en.wikipedia.org/wiki/Byte_pair_encoding",
     "snippet": "Byte-pair encoding builds a subword vocabulary by repeatedly merging the most frequent pair of "
                "adjacent symbols; language model tokenizers use it to split text into tokens."},
    {"title": "SQLite FTS5 full-text search",
     "url": "https://www.sqlite.org/fts5.html",
     "snippet": "FTS5 is an SQLite virtual table module for full-text search; it ranks matches with the BM25 "
                "function and can return highlighted snippets."},
    {"title": "Python (programming language)",
     "url": "https://www.python.org",
     "snippet": "Python is a general-purpose programming language known for readable code and a large "
                "standard library."},
    {"title": "Photosynthesis",
     "url": "https://en.wikipedia.org/wiki/Photosynthesis",
     "snippet": "Photosynthesis converts light energy, water and carbon dioxide into glucose and oxygen in the "
                "chloroplasts of plants and algae."},
    {"title": "Speed of light",
     "url": "https://en.wikipedia.org/wiki/Speed_of_light",
     "snippet": "The speed of light in vacuum is exactly 299,792,458 metres per second."},
    {"title": "Pendulum",
     "url": "https://en.wikipedia.org/wiki/Pendulum",
     "snippet": "For small swings, a simple pendulum's period is T = 2 pi sqrt(L / g), independent of the mass "
                "and nearly independent of the amplitude."},
]

_NOT_JSON = object()

_STOPWORDS = frozenset(
    "a an and are as at be by do does for from how i in is it its of on or the to what when where which who "
    "why with work works me about".split()
)
_TOKEN = re.compile(r"[a-z0-9]+")


def _terms(text: str) -> list[str]:
    """Lower-case word terms without stop words, with a crude plural strip ("panels" -> "panel")."""
    out = []
    for t in _TOKEN.findall(text.lower()):
        if t in _STOPWORDS:
            continue
        if len(t) > 3 and t.endswith("s") and not t.endswith("ss"):
            t = t[:-1]
        out.append(t)
    return out


def rank_pages(query: str, pages: list[dict[str, str]] = OFFLINE_PAGES, k: int = 5) -> list[dict[str, str]]:
    """Pages sharing terms with ``query``: title matches count 3, snippet matches 1; ties keep corpus order."""
    q = set(_terms(query))
    if not q:
        return []
    scored = []
    for i, page in enumerate(pages):
        title, snippet = set(_terms(page["title"])), set(_terms(page["snippet"]))
        score = 3 * len(q & title) + len(q & snippet)
        if score:
            scored.append((-score, i, page))
    scored.sort(key=lambda s: (s[0], s[1]))
    return [dict(p) for _, _, p in scored[:k]]


def _split_entry(entry: str) -> tuple[str, str]:
    """('host', 'port' | '*' | '') of one allowlist entry such as 'localhost:8000', '[::1]:80' or 'example.com'."""
    e = entry.strip().lower()
    if e.startswith("["):
        host, _, rest = e[1:].partition("]")
        return host, rest.lstrip(":")
    if e.count(":") == 1:
        host, _, port = e.partition(":")
        return host, port
    return e, ""  # a bare host, or an unbracketed IPv6 address


def _entry(host: str, port: int | str = "") -> str:
    """One allowlist entry: IPv6 addresses in brackets, the port after a colon when there is one."""
    h = f"[{host}]" if ":" in host else host
    return f"{h}:{port}" if port != "" else h


def normalise_hosts(hosts: Iterable[str]) -> frozenset[str]:
    """Allowlist entries as 'host:port', 'host:*' or 'host' (the scheme's default port); a bad port is an error."""
    out = set()
    for entry in hosts:
        if not entry.strip():
            continue
        host, port = _split_entry(entry)
        if port and port != "*" and not (port.isdigit() and 0 < int(port) < 65536):
            raise CodetteError(f"allowed host {entry!r}: the port must be a number from 1 to 65535 or '*'")
        out.add(_entry(host, port))
    return frozenset(out)


def _allowed_names(allowed: frozenset[str]) -> str:
    return ", ".join(sorted({_split_entry(e)[0] for e in allowed}))


def check_url(url: str, allowed_hosts: frozenset[str]) -> httpx.URL:
    """The parsed URL if its scheme is http(s) and its host and port are allowlisted; ToolFailure otherwise."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise ToolFailure(f"invalid URL '{url}': {exc}") from None
    if parsed.scheme not in ("http", "https"):
        raise ToolFailure(f"URL scheme '{parsed.scheme or '(none)'}' is not allowed; use http or https")
    host = (parsed.host or "").lower().strip("[]")
    if not host:
        raise ToolFailure(f"URL '{url}' has no host")
    if not allowed_hosts:
        raise ToolFailure(f"host not allowed: '{host}'; no hosts are allowed (none configured)")
    port = parsed.port or _DEFAULT_PORTS[parsed.scheme]
    names = {_split_entry(e)[0] for e in allowed_hosts}
    if host not in names:
        raise ToolFailure(f"host not allowed: '{host}'; allowed hosts: {_allowed_names(allowed_hosts)}")
    if not ({_entry(host, port), _entry(host, "*")} & allowed_hosts or
            (_entry(host) in allowed_hosts and port == _DEFAULT_PORTS[parsed.scheme])):
        ports = sorted(e for e in allowed_hosts if _split_entry(e)[0] == host)
        raise ToolFailure(f"port {port} of host '{host}' is not allowed; allowed: {', '.join(ports)}")
    return parsed


def check_headers(headers: dict[str, str] | None) -> dict[str, str]:
    """The caller's headers, refusing any that frame the request or choose its target (Host, Content-Length...)."""
    out: dict[str, str] = {}
    for name, value in (headers or {}).items():
        if name.strip().lower() in FORBIDDEN_HEADERS:
            raise ToolFailure(f"header '{name}' cannot be set; http_request sets it itself")
        if any(c in name + value for c in "\r\n\x00") or not name.strip() or ":" in name:
            raise ToolFailure(f"header '{name[:40]}' has a name or value that is not allowed (line breaks, NUL, ':')")
        out[name] = value
    out["Accept-Encoding"] = "gzip, deflate"
    return out


class _Decoder:
    """Content-Encoding decoding with a cap on the *decoded* size, so a small gzip cannot inflate to gigabytes."""

    def __init__(self, encoding: str) -> None:
        enc = encoding.strip().lower()
        self._raw_deflate_tried = False
        if enc in ("", "identity"):
            self._z = None
        elif enc in ("gzip", "x-gzip"):
            self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif enc == "deflate":
            self._z = zlib.decompressobj()
        else:
            raise ToolFailure(f"the response uses content encoding '{encoding[:40]}', which http_request does not decode")

    def feed(self, chunk: bytes, room: int) -> bytes:
        if self._z is None:
            return chunk[:room]
        try:
            return self._z.decompress(chunk, room)
        except zlib.error:
            if not self._raw_deflate_tried:  # some servers send raw deflate without the zlib header
                self._raw_deflate_tried = True
                self._z = zlib.decompressobj(-zlib.MAX_WBITS)
                try:
                    return self._z.decompress(chunk, room)
                except zlib.error:
                    pass
            raise ToolFailure("the response body is not valid compressed data") from None


def _read_capped(resp: httpx.Response, max_bytes: int, deadline: float) -> tuple[bytes, bool]:
    decoder = _Decoder(resp.headers.get("content-encoding", ""))
    out = bytearray()
    for chunk in resp.iter_raw(16384):
        room = max_bytes + 1 - len(out)
        out += decoder.feed(chunk, room)
        if len(out) > max_bytes:
            return bytes(out[:max_bytes]), True
        if time.monotonic() > deadline:
            raise httpx.ReadTimeout("deadline")
    return bytes(out), False


def _exchange(method: str, url: httpx.URL, timeout_s: float, max_bytes: int, **request: Any
              ) -> tuple[httpx.Response, bytes, bool]:
    """One request and its capped, decoded body under one deadline for the whole exchange.

    The exchange runs in a thread; at the deadline the socket is shut down under it, so a server that
    trickles one byte at a time cannot hold the call past ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            with httpx.Client(timeout=timeout_s, follow_redirects=False, trust_env=False) as client:
                resp = client.send(client.build_request(method, url, **request), stream=True)
                box["resp"] = resp
                try:
                    body, truncated = _read_capped(resp, max_bytes, deadline)
                finally:
                    resp.close()
                box["done"] = (resp, body, truncated)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=work, name="codette-http", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        resp = box.get("resp")
        stream = resp.extensions.get("network_stream") if resp is not None else None
        sock = stream.get_extra_info("socket") if stream is not None else None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        raise httpx.ReadTimeout("deadline")
    if "error" in box:
        raise box["error"]
    return box["done"]


def _text(resp: httpx.Response, body: bytes) -> str:
    charset = resp.charset_encoding or "utf-8"
    try:
        codecs.lookup(charset)
    except LookupError:
        charset = "utf-8"
    return body.decode(charset, errors="replace")


def http_request(
    url: str,
    allowed_hosts: frozenset[str],
    method: str = "GET",
    params: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    body: str | None = None,
    json_body: Any = None,
    timeout_s: float = DEFAULT_HTTP_TIMEOUT_S,
) -> dict[str, Any]:
    """Send one request to an allowlisted host:port; status, a few headers and the (truncated) body."""
    parsed = check_url(url, allowed_hosts)
    method = method.upper()
    if body is not None and json_body is not None:
        raise ToolFailure("give either 'body' or 'json', not both")
    sent_headers = check_headers(headers)
    try:
        resp, raw, cut = _exchange(method, parsed, timeout_s, MAX_RESPONSE_BYTES, params=params,
                                   headers=sent_headers, json=json_body,
                                   content=body.encode("utf-8") if body is not None else None)
    except httpx.TimeoutException:
        raise ToolFailure(f"request to {parsed.host} timed out after {timeout_s:g} s") from None
    except httpx.HTTPError as exc:
        raise ToolFailure(f"request to {parsed.host} failed: {str(exc)[:200]}") from None
    except (ValueError, TypeError, RecursionError) as exc:  # e.g. a JSON body that cannot be encoded
        raise ToolFailure(f"request to {parsed.host} could not be sent: {str(exc)[:200]}") from None
    text = _text(resp, raw)
    result: dict[str, Any] = {
        "url": str(resp.request.url),
        "status": resp.status_code,
        "headers": {k: resp.headers[k][:500] for k in RESPONSE_HEADERS if k in resp.headers},
    }
    # A JSON answer is given parsed ("json"), so the model does not read JSON escaped inside a string.
    decoded: Any = _NOT_JSON
    if "json" in resp.headers.get("content-type", "") and not cut and len(text) <= MAX_BODY_CHARS:
        try:
            decoded = limits.loads(text, MAX_BODY_CHARS)
        except limits.JSONLimitError:
            decoded = _NOT_JSON
    if decoded is not _NOT_JSON:
        result["json"] = decoded
    else:
        result["body"] = text[:MAX_BODY_CHARS]
        result["truncated"] = cut or len(text) > MAX_BODY_CHARS
    if resp.status_code >= 400:
        raise ToolFailure(f"HTTP {resp.status_code} {resp.reason_phrase} from {parsed.host}", result)
    return result


def _cap_results(items: list[Any], max_results: int) -> list[dict[str, str]]:
    """At most ``max_results`` results, each field cut to its limit, all together within MAX_SEARCH_RESULT_CHARS."""
    out: list[dict[str, str]] = []
    total = 0
    for r in items[:max_results]:
        if not isinstance(r, dict):
            continue
        item = {"title": str(r.get("title", ""))[:MAX_TITLE_CHARS], "url": str(r.get("url", ""))[:MAX_URL_CHARS],
                "snippet": str(r.get("snippet", ""))[:MAX_SNIPPET_CHARS]}
        size = sum(len(v) for v in item.values())
        if total + size > MAX_SEARCH_RESULT_CHARS:
            break
        total += size
        out.append(item)
    return out


def web_search(
    query: str,
    max_results: int = 5,
    endpoint: str | None = None,
    allowed_hosts: frozenset[str] = frozenset(DEFAULT_ALLOWED_HOSTS),
    timeout_s: float = DEFAULT_HTTP_TIMEOUT_S,
) -> dict[str, Any]:
    """Search the configured local endpoint (``GET endpoint?q=...&n=...`` returning JSON), else the offline corpus."""
    if not query.strip():
        raise ToolFailure("the search query is empty")
    if endpoint is None:
        return {"source": "offline-fixture", "query": query, "results": rank_pages(query, k=max_results)}
    parsed = check_url(endpoint, allowed_hosts)
    try:
        resp, raw, cut = _exchange("GET", parsed, timeout_s, MAX_SEARCH_RESPONSE_BYTES,
                                   params={"q": query, "n": max_results}, headers=check_headers(None))
    except httpx.TimeoutException:
        raise ToolFailure(f"search service timed out after {timeout_s:g} s") from None
    except httpx.HTTPError as exc:
        raise ToolFailure(f"search service failed: {str(exc)[:200]}") from None
    if resp.status_code != 200:
        raise ToolFailure(f"search service answered HTTP {resp.status_code}")
    if cut:
        raise ToolFailure(f"search service answered more than {MAX_SEARCH_RESPONSE_BYTES // 1024} KiB")
    try:
        data = limits.loads(_text(resp, raw), MAX_SEARCH_RESPONSE_BYTES)
    except limits.JSONLimitError:
        raise ToolFailure("search service did not return JSON") from None
    items = data.get("results") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise ToolFailure("search service returned no 'results' list")
    return {"source": "endpoint", "query": query, "results": _cap_results(items, max_results)}


def endpoint_entry(endpoint: str | None) -> frozenset[str]:
    """The allowlist entry the configured search endpoint implies (web_search only; the model cannot change it).

    A malformed endpoint or one that is not http(s) is a setup mistake, not a tool error.
    """
    if endpoint is None:
        return frozenset()
    try:
        parsed = httpx.URL(endpoint)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise CodetteError(f"search endpoint {endpoint}: invalid URL ({exc})") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise CodetteError(f"search endpoint {endpoint}: use an http or https URL with a host")
    return frozenset({_entry(parsed.host.lower().strip("[]"), parsed.port or _DEFAULT_PORTS[parsed.scheme])})
