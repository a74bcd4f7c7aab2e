"""Network requests: the local fixture services over HTTP, hosts that are refused, and the offline web search."""

from __future__ import annotations

import datetime as dt
import json
import random
from typing import Any

from codette.config import ToolMixConfig
from codette.data.curriculum.common import NAMES, fmt
from codette.data.curriculum.tools.base import Scenario, first_sentence, pick, quote
from codette.data.curriculum.tools.names import BLOCKED_SITES, CITIES, NO_RESULT_SEARCHES, SEARCHES
from codette.data.curriculum.toolrun import CANONICAL_BASE

# How people ask for a web search on ``{q}`` (also the copy documents' wording, codette.data.copydocs).
SEARCH_PROMPTS = ["Search the web for {q}.", "Look up {q} online.", "Find information about {q}.",
                  "What does the web say about {q}?", "Do a web search on {q}.",
                  "Can you search online for {q}?", "Search for {q}, please.", "Web search: {q}.",
                  "I need a web source on {q}.", "Find me a page about {q}.",
                  "Search online: {q}.", "Could you look up {q} on the web?", "Find a web page on {q}.",
                  "What can you find online about {q}?", "Please search the web for {q}.",
                  "Run a web search for {q}.", "Look for {q} on the web.", "Any web results on {q}?"]
URL_PROMPTS = ["Get {u} for me.", "Call {u}."]  # a request that names the address ``{u}``


def http_request(rng: random.Random, mix: ToolMixConfig) -> Scenario:
    kind = rng.choice(["weather", "weather", "time", "echo"]
                      + (["blocked", "notfound"] if rng.random() < 2 * mix.call_error else []))
    setup: dict[str, Any] = {}
    if kind == "weather":
        city = rng.choice(CITIES)
        pi, prompt = pick(rng, ["What's the weather in {c}? Ask the local weather service.",
                                "Check the local weather service for {c}.", "Get the weather for {c} from the local API."])
        prompt = prompt.format(c=city)
        args: dict[str, Any] = {"url": f"{CANONICAL_BASE}/weather", "params": {"city": city}}

        def answer(data: Any, ok: bool) -> str:
            w = data["json"]
            return (f"The local weather service reports {w['condition']} in {city}: {fmt(w['temperature_c'])} C, "
                    f"{w['humidity_pct']}% humidity and wind at {w['wind_kmh']} km/h. This is fixture data, "
                    f"not a real forecast.")
    elif kind == "time":
        clock = rng.randint(1_600_000_000, 1_800_000_000)
        setup["clock"] = clock
        pi, prompt = pick(rng, ["What time does the local server say it is?", "Ask the local time service for the time.",
                                "Get the current time from the local server."])
        args = {"url": f"{CANONICAL_BASE}/time"}

        def answer(data: Any, ok: bool) -> str:
            t = data["json"]
            when = dt.datetime.fromtimestamp(t["unix"], dt.timezone.utc)
            return (f"The server's clock reads {t['utc']}, that is {when:%H:%M} UTC on {when:%d %B %Y} "
                    f"(Unix time {t['unix']}).")
    elif kind == "echo":
        name, n = rng.choice(NAMES), rng.randint(1, 99)
        params = {"name": name, "count": str(n)}
        pi, prompt = pick(rng, ["Send name={a} and count={n} to the local echo service.",
                                "Ask the echo endpoint to repeat name={a}, count={n}."])
        prompt = prompt.format(a=name, n=n)
        args = {"url": f"{CANONICAL_BASE}/echo", "params": params}

        def answer(data: Any, ok: bool) -> str:
            return (f"The echo service answered with status {data['status']} and sent the parameters back: "
                    f"{json.dumps(data['json']['args'])}.")
    elif kind == "blocked":
        site = rng.choice(BLOCKED_SITES)
        pi, prompt = pick(rng, ["Fetch https://{s}/ for me.", "Download the page at https://{s}/.",
                                "Send a request to https://{s}/."])
        prompt = prompt.format(s=site)
        args = {"url": f"https://{site}/"}

        def answer(data: Any, ok: bool) -> str:
            return (f"I cannot reach {site}: my http_request tool only allows local hosts (localhost and "
                    f"127.0.0.1), so the request was refused before it was sent.")
    else:
        ep = rng.choice(["forecast", "news", "users", "status"])
        pi, prompt = pick(rng, URL_PROMPTS)
        prompt = prompt.format(u=f"{CANONICAL_BASE}/{ep}")
        args = {"url": f"{CANONICAL_BASE}/{ep}"}

        def answer(data: Any, ok: bool) -> str:
            return (f"The local service answered {data['error'].split(' from ')[0]}: it has no /{ep} endpoint. It "
                    f"offers /weather, /time and /echo.")
    return Scenario("http_request", f"{kind}-{pi}", prompt, "http_request", args, setup, answer, ())


def web_search(rng: random.Random, mix: ToolMixConfig) -> Scenario:
    hit = rng.random() > mix.call_error / 2
    query = rng.choice(SEARCHES if hit else NO_RESULT_SEARCHES)
    pi, prompt = pick(rng, SEARCH_PROMPTS)

    def answer(data: Any, ok: bool) -> str:
        res = data["results"]
        if not res:
            return f"The search found nothing about {query}. The offline collection is small; try other words."
        r = res[0]
        return f"According to {quote(r['title'])} ({r['url']}): {first_sentence(r['snippet'])}"

    return Scenario("web_search", f"{int(hit)}-{pi}", prompt.format(q=query), "web_search",
                    {"query": query, "max_results": 1}, {}, answer, ())
