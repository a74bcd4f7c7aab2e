"""http_request and web_search: network tools that can only reach allowlisted (by default local) hosts.

The host check happens on the parsed URL before any connection or DNS lookup, proxies from the
environment are ignored and redirects are not followed, so nothing leaves the allowlist. Without a
configured search endpoint, web_search ranks :data:`OFFLINE_PAGES`, a small recorded corpus shipped
with the module, and says ``"source": "offline-fixture"``.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from typing import Any

import httpx

from codette.errors import CodetteError
from codette.tools.base import ToolFailure

log = logging.getLogger(__name__)

DEFAULT_ALLOWED_HOSTS: tuple[str, ...] = ("127.0.0.1", "localhost")
DEFAULT_HTTP_TIMEOUT_S = 5.0
MAX_BODY_CHARS = 8000
MAX_REQUEST_BODY_CHARS = 64 * 1024
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


def normalise_hosts(hosts: Iterable[str]) -> frozenset[str]:
    return frozenset(h.strip().lower().strip("[]") for h in hosts if h.strip())


def check_url(url: str, allowed_hosts: frozenset[str]) -> httpx.URL:
    """The parsed URL if its scheme is http(s) and its host is allowlisted; ToolFailure otherwise."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise ToolFailure(f"invalid URL '{url}': {exc}") from None
    if parsed.scheme not in ("http", "https"):
        raise ToolFailure(f"URL scheme '{parsed.scheme or '(none)'}' is not allowed; use http or https")
    host = (parsed.host or "").lower().strip("[]")
    if not host:
        raise ToolFailure(f"URL '{url}' has no host")
    if host not in allowed_hosts:
        raise ToolFailure(f"host not allowed: '{host}'; allowed hosts: {', '.join(sorted(allowed_hosts))}")
    return parsed


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
    """Send one request to an allowlisted host; status, a few headers and the (truncated) body."""
    parsed = check_url(url, allowed_hosts)
    method = method.upper()
    if body is not None and json_body is not None:
        raise ToolFailure("give either 'body' or 'json', not both")
    try:
        with httpx.Client(timeout=timeout_s, follow_redirects=False, trust_env=False) as client:
            resp = client.request(method, parsed, params=params, headers=headers,
                                  content=body.encode("utf-8") if body is not None else None, json=json_body)
            text = resp.text
    except httpx.TimeoutException:
        raise ToolFailure(f"request to {parsed.host} timed out after {timeout_s:g} s") from None
    except httpx.HTTPError as exc:
        raise ToolFailure(f"request to {parsed.host} failed: {exc}") from None
    result: dict[str, Any] = {
        "url": str(resp.request.url),
        "status": resp.status_code,
        "headers": {k: resp.headers[k] for k in RESPONSE_HEADERS if k in resp.headers},
    }
    # A JSON answer is given parsed ("json"), so the model does not read JSON escaped inside a string.
    decoded: Any = _NOT_JSON
    if "json" in resp.headers.get("content-type", "") and len(text) <= MAX_BODY_CHARS:
        try:
            decoded = json.loads(text)
        except ValueError:
            decoded = _NOT_JSON
    if decoded is not _NOT_JSON:
        result["json"] = decoded
    else:
        result["body"] = text[:MAX_BODY_CHARS]
        result["truncated"] = len(text) > MAX_BODY_CHARS
    if resp.status_code >= 400:
        raise ToolFailure(f"HTTP {resp.status_code} {resp.reason_phrase} from {parsed.host}", result)
    return result


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
    check_url(endpoint, allowed_hosts)
    try:
        with httpx.Client(timeout=timeout_s, follow_redirects=False, trust_env=False) as client:
            resp = client.get(endpoint, params={"q": query, "n": max_results})
    except httpx.TimeoutException:
        raise ToolFailure(f"search service timed out after {timeout_s:g} s") from None
    except httpx.HTTPError as exc:
        raise ToolFailure(f"search service failed: {exc}") from None
    if resp.status_code != 200:
        raise ToolFailure(f"search service answered HTTP {resp.status_code}")
    try:
        data = resp.json()
    except ValueError:
        raise ToolFailure("search service did not return JSON") from None
    items = data.get("results") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise ToolFailure("search service returned no 'results' list")
    results = [{"title": str(r.get("title", "")), "url": str(r.get("url", "")), "snippet": str(r.get("snippet", ""))}
               for r in items[:max_results] if isinstance(r, dict)]
    return {"source": "endpoint", "query": query, "results": results}


def validate_endpoint(endpoint: str | None, allowed_hosts: frozenset[str]) -> None:
    """Configuration check: a search endpoint outside the allowlist is a setup mistake, not a tool error."""
    if endpoint is None:
        return
    try:
        check_url(endpoint, allowed_hosts)
    except ToolFailure as exc:
        raise CodetteError(f"search endpoint {endpoint}: {exc.message}") from None
