"""`codette serve --metrics` (codette.serve.metrics): GET /metrics in Prometheus's text format, parsed with
prometheus_client's own parser; requests by route and status, refusals, tokens, latency histograms and the
queue; off (404) unless asked; one registry per app, so servers in one process count apart."""

from __future__ import annotations

import httpx
import ollama
from prometheus_client.parser import text_string_to_metric_families

from tests.test_serve import GOOD, Scripted, client, running


def scrape(url: str, **headers: str) -> dict[tuple[str, tuple], float]:
    """``{(sample name, sorted labels): value}`` of the server's /metrics."""
    r = httpx.get(url + "/metrics", headers=headers)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain"), r.text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(r.text) for s in family.samples}


def test_metrics_are_off_unless_asked():
    with running(Scripted(["ok"])) as url:
        r = httpx.get(url + "/metrics")
        assert r.status_code == 404


def test_metrics_count_requests_refusals_tokens_and_latency():
    backend = Scripted(["Hello there, I am Codette."])  # 11 prompt tokens, 6 completion tokens (Scripted's counts)
    with running(backend, metrics=True) as url, running(Scripted(["other"]), metrics=True) as other:
        port = url.rsplit(":", 1)[1]
        client(url).chat.completions.create(model="codette", messages=GOOD["messages"])
        ollama.Client(host=url).chat(model="codette", messages=GOOD["messages"])
        assert httpx.post(url + "/v1/chat/completions", json=GOOD, headers={"Host": f"evil:{port}"}).status_code == 403
        assert httpx.post(url + "/v1/chat/completions", content=b"x", headers={"Content-Type": "text/plain"}
                          ).status_code == 415
        assert httpx.get(url + "/no/such/route").status_code == 404
        m = scrape(url)
        assert m["codette_requests_total", (("endpoint", "/v1/chat/completions"), ("status", "200"))] == 1
        assert m["codette_requests_total", (("endpoint", "/api/chat"), ("status", "200"))] == 1
        assert m["codette_requests_total", (("endpoint", "/v1/chat/completions"), ("status", "403"))] == 1
        assert m["codette_requests_total", (("endpoint", "other"), ("status", "404"))] == 1  # unknown paths pooled
        assert m["codette_rejected_requests_total", (("reason", "host_or_origin"),)] == 1
        assert m["codette_rejected_requests_total", (("reason", "not_json"),)] == 1
        assert m["codette_prompt_tokens_total", ()] == 22 and m["codette_completion_tokens_total", ()] == 12
        assert m["codette_time_to_first_token_seconds_count", ()] == 2
        assert m["codette_time_to_first_token_seconds_sum", ()] > 0
        assert m["codette_time_per_output_token_seconds_count", ()] == 2
        assert m["codette_queue_depth", ()] == 0 and m["codette_generating", ()] == 0
        # the other server, in the same process, counted only what it was asked
        theirs = scrape(other)
        assert not any(name == "codette_requests_total" and ("endpoint", "/v1/chat/completions") in labels
                       for name, labels in theirs)
        assert theirs["codette_prompt_tokens_total", ()] == 0


def test_metrics_need_the_api_key_when_one_is_set():
    with running(Scripted(["ok"]), metrics=True, api_key="s3cret") as url:
        assert httpx.get(url + "/metrics").status_code == 401
        m = scrape(url, Authorization="Bearer s3cret")
        assert m["codette_rejected_requests_total", (("reason", "api_key"),)] == 1
        assert m["codette_requests_total", (("endpoint", "/metrics"), ("status", "401"))] == 1
