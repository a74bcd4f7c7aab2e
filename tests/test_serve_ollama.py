"""`codette serve` speaking Ollama's native API (codette.serve.ollama), with the official `ollama` Python
client as the peer: chat (whole, streamed, with tools, with `format`), generate (templated and raw), tags,
show, ps and version; the guard and the queue on /api/; and Codette's own Ollama backend pointed at the
server. A scripted backend (tests/test_serve.py) makes every reply known; test_serve_rawtext.py runs a
real checkpoint and GGUF through the same routes.
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import ollama
import pytest
from pydantic import BaseModel

from codette.backends.base import Chunk
from codette.errors import CodetteError
from tests.test_serve import CALC, Gated, Scripted, call, running


def client(url: str, **kw: object) -> ollama.Client:
    return ollama.Client(host=url, timeout=30, **kw)


class RawScripted(Scripted):
    """Scripted, with a one-character-per-token tokenizer: what raw prompts and /tokenize need."""

    def tokenize(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def detokenize(self, ids: list[int]) -> str:
        if any(not 0 <= i < 0x110000 for i in ids):
            raise CodetteError("token ids must be 0 to 1114111")
        return "".join(map(chr, ids))

    def stream_tokens(self, ids: list[int], sampling=None):
        yield from self.stream([{"role": "raw", "content": self.detokenize(ids)}], None, sampling)


class Described(Scripted):
    """Scripted, with the facts a GGUF backend reports about its model."""

    def model_facts(self) -> dict[str, object]:
        return {"format": "gguf", "family": "llama", "parameter_count": 3_211_264, "quantization": "Q8_0",
                "template": "{% for m in messages %}{{ m.content }}{% endfor %}", "file": None}


USER = [{"role": "user", "content": "Who are you?"}]


# -- chat ---------------------------------------------------------------------------------------------
def test_chat_whole_and_streamed_with_ollamas_counts_and_durations():
    backend = Scripted(["<consciousness> Hello! I am Codette."])
    with running(backend, model_name="codette-test") as url:
        c = client(url)
        r = c.chat(model="codette-test", messages=USER)
        assert r.message.role == "assistant" and r.message.content == "Hello! I am Codette."  # markers left out
        assert r.done and r.done_reason == "stop" and r.model == "codette-test:latest"
        assert (r.prompt_eval_count, r.eval_count) == (11, 9)  # the backend's own counts
        assert r.total_duration >= r.eval_duration >= 0 and r.total_duration >= r.prompt_eval_duration >= 0
        assert r.load_duration >= 0 and r.created_at.endswith("Z")
        parts = list(c.chat(model="codette-test", messages=USER, stream=True))
        assert "".join(p.message.content for p in parts) == "Hello! I am Codette."
        assert [p.done for p in parts] == [False] * (len(parts) - 1) + [True]
        assert parts[-1].done_reason == "stop" and parts[-1].eval_count == 9 and parts[-1].total_duration > 0
        assert backend.prompts[0] == (USER, None)
        # Ollama streams unless asked not to: a bare request gets NDJSON lines
        with httpx.stream("POST", url + "/api/chat", json={"model": "codette-test", "messages": USER}) as raw:
            assert raw.headers["content-type"] == "application/x-ndjson"
            lines = [json.loads(line) for line in raw.iter_lines() if line]
        assert len(lines) > 2 and lines[-1]["done"] is True and not any(x["done"] for x in lines[:-1])


def test_tool_calls_come_back_with_arguments_as_an_object_and_the_result_goes_back():
    backend = Scripted(["Let me work it out.\n" + call("calculator", expression="37 * 91"), "37 * 91 = 3367."])
    with running(backend) as url:
        c = client(url)
        msgs = [{"role": "user", "content": "What is 37 * 91?"}]
        r = c.chat(model="codette", messages=msgs, tools=[CALC])
        (tc,) = r.message.tool_calls
        assert tc.function.name == "calculator" and tc.function.arguments == {"expression": "37 * 91"}
        assert r.message.content == "Let me work it out." and r.done_reason == "stop"
        assert backend.prompts[0][1] == [CALC]  # the client's tools reach the chat template as sent
        # The client sends the call and its result back (Ollama pairs them by order and tool_name).
        msgs += [r.message, {"role": "tool", "content": '{"result": 3367}', "tool_name": "calculator"}]
        r2 = c.chat(model="codette", messages=msgs, tools=[CALC])
        assert r2.message.content == "37 * 91 = 3367." and not r2.message.tool_calls
        sent = backend.prompts[1][0]
        assert sent[1]["tool_calls"] == [{"type": "function", "function": {"name": "calculator",
                                                                           "arguments": {"expression": "37 * 91"}}}]
        assert sent[2] == {"role": "tool", "content": '{"result": 3367}'}
        # streamed: the markup is held back and the call arrives whole, before the done line
        backend.replies = ["Sure. " + call("calculator", expression="2 ** 10")]
        parts = list(c.chat(model="codette", messages=msgs[:1], tools=[CALC], stream=True))
    text = "".join(p.message.content or "" for p in parts)
    assert "<tool_call>" not in text and text.strip() == "Sure."
    calls = [tc for p in parts for tc in (p.message.tool_calls or [])]
    assert [(t.function.name, t.function.arguments) for t in calls] == [("calculator", {"expression": "2 ** 10"})]
    assert parts[-1].done and not parts[-1].message.tool_calls


class Answer(BaseModel):
    answer: str
    sure: bool


def test_format_options_and_stop_reach_the_backend():
    backend = Scripted(['{"answer": "yes", "sure": true} STOP and more'])
    with running(backend) as url:
        c = client(url)
        r = c.chat(model="codette", messages=USER, format="json",
                   options={"temperature": 0.2, "top_p": 0.9, "top_k": 7, "seed": 42, "num_predict": 33,
                            "stop": ["STOP"], "repeat_penalty": 1.3}, keep_alive="5m")
        assert json.loads(r.message.content) == {"answer": "yes", "sure": True}  # cut at the stop sequence
        s = backend.samplings[-1]
        assert (s.temperature, s.top_p, s.top_k, s.seed, s.max_new_tokens) == (0.2, 0.9, 7, 42, 33)
        assert s.response_format == "json"
        schema = Answer.model_json_schema()
        r = c.generate(model="codette", prompt="Are you sure?", format=schema, options={"stop": ["STOP"]})
        assert Answer.model_validate_json(r.response).sure is True
        assert backend.samplings[-1].response_format == schema  # passed on as sent: the backend constrains
        c.chat(model="codette", messages=USER)
        assert backend.samplings[-1].response_format is None and backend.samplings[-1].max_new_tokens == 512


def test_the_context_limits_num_predict_and_num_ctx():
    backend = Scripted(["ok"], context_length=400)
    with running(backend) as url:
        c = client(url)
        prompt = backend.count_tokens(USER)
        c.chat(model="codette", messages=USER, options={"num_predict": -1})
        assert backend.samplings[-1].max_new_tokens == 400 - prompt  # until the context is full
        c.chat(model="codette", messages=USER, options={"num_ctx": prompt + 5, "num_predict": 100})
        assert backend.samplings[-1].max_new_tokens == 5
        with pytest.raises(ollama.ResponseError) as info:
            c.chat(model="codette", messages=USER, options={"num_ctx": prompt})
        assert info.value.status_code == 400 and f"the prompt is {prompt} tokens" in info.value.error
        with pytest.raises(ollama.ResponseError) as info:
            c.chat(model="codette", messages=[{"role": "user", "content": "x" * 3000}])
        assert info.value.status_code == 400 and "this model's context is 400 tokens" in info.value.error
        assert len(backend.samplings) == 2


@pytest.mark.parametrize(("body", "needle"), [
    ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages.0.role:"),
    ({"messages": [{"role": "tool", "content": "42"}]}, "messages.0: a tool message must follow"),
    ({"messages": USER, "options": {"num_predict": 0}}, "options.num_predict:"),
    ({"messages": USER, "options": {"temperature": -1}}, "options.temperature:"),
    ({"messages": USER, "format": "yaml"}, "format"),
    ({"messages": [{"role": "user", "content": "look", "images": ["aGk="]}]}, "messages.0.images: this model reads no"),
])
def test_bad_chat_bodies_get_ollamas_error_naming_the_field(body, needle):
    backend = Scripted(["ok"])
    with running(backend) as url:
        r = httpx.post(url + "/api/chat", json={"model": "codette", "stream": False, **body})
        assert r.status_code == 400 and needle in r.json()["error"], r.text
        assert backend.prompts == []


# -- generate -----------------------------------------------------------------------------------------
def test_generate_with_the_template_raw_and_empty():
    backend = RawScripted(["<consciousness> Rayleigh scattering."])
    with running(backend) as url:
        c = client(url)
        r = c.generate(model="codette", prompt="Why is the sky blue?", system="Be brief.")
        assert r.response == "Rayleigh scattering." and r.done and r.eval_count == 9
        assert backend.prompts[-1][0] == [{"role": "system", "content": "Be brief."},
                                          {"role": "user", "content": "Why is the sky blue?"}]
        parts = list(c.generate(model="codette", prompt="Why?", stream=True))
        assert "".join(p.response for p in parts) == "Rayleigh scattering." and parts[-1].done
        raw = c.generate(model="codette", prompt="<|im_start|>user\nWhy?<|im_end|>\n", raw=True, system="ignored")
        assert raw.response == "<consciousness> Rayleigh scattering."  # raw: the model's text as written
        assert backend.prompts[-1][0] == [{"role": "raw", "content": "<|im_start|>user\nWhy?<|im_end|>\n"}]
        calls = len(backend.prompts)
        loaded = c.generate(model="codette", prompt="")  # how Ollama's clients load a model
        assert loaded.done and loaded.done_reason == "load" and loaded.response == ""
        assert c.chat(model="codette", messages=[], keep_alive=0).done_reason == "unload"
        assert len(backend.prompts) == calls
        # a stop sequence ends the generation before the backend's counts: the prompt's are known (one token
        # per character here) and the reply's are counted from its text
        backend.replies = ["abc STOP def"]
        cut = c.generate(model="codette", prompt="12345", raw=True, options={"stop": ["STOP"]})
        assert cut.response == "abc " and (cut.prompt_eval_count, cut.eval_count) == (5, 4)
        for bad, needle in (({"suffix": "end"}, "suffix"), ({"template": "{{ .Prompt }}"}, "raw: true")):
            r = httpx.post(url + "/api/generate", json={"model": "codette", "prompt": "x", **bad})
            assert r.status_code == 400 and needle in r.json()["error"]


def test_raw_generate_needs_a_tokenizer():
    with running(Scripted(["ok"])) as url:
        with pytest.raises(ollama.ResponseError) as info:
            client(url).generate(model="codette", prompt="abc", raw=True)
    assert info.value.status_code == 501 and "needs a local model" in info.value.error


# -- the model's description ------------------------------------------------------------------------------
def test_tags_show_ps_and_version_describe_the_model_under_its_alias():
    with running(Described(["ok"], context_length=128), model_name="codette_model", model_alias="my-codette") as url:
        c = client(url)
        (m,) = c.list().models
        assert m.model == "my-codette:latest" and m.modified_at is not None and len(m.digest) == 64
        d = m.details
        assert (d.format, d.family, d.families, d.parameter_size, d.quantization_level) == \
            ("gguf", "llama", ["llama"], "3.2M", "Q8_0")
        for name in ("my-codette", "my-codette:latest"):
            shown = c.show(name)
            assert shown.details.parameter_size == "3.2M" and shown.template.startswith("{% for m in messages")
            assert shown.modelinfo["llama.context_length"] == 128
            assert shown.modelinfo["general.parameter_count"] == 3_211_264 and "tools" in shown.capabilities
        for other in ("codette_model", "llama3.2"):
            with pytest.raises(ollama.ResponseError) as info:
                c.show(other)
            assert info.value.status_code == 404 and "my-codette" in info.value.error
        (p,) = c.ps().models
        assert p.model == "my-codette:latest" and p.context_length == 128
        assert httpx.get(url + "/api/version").json()["version"]
        assert [x["id"] for x in httpx.get(url + "/v1/models").json()["data"]] == ["my-codette"]
        assert c.chat(model="my-codette", messages=USER).model == "my-codette:latest"


# -- who may call, and the queue --------------------------------------------------------------------------
def test_the_guard_answers_api_routes_in_ollamas_shape():
    with running(Scripted(["ok"]), api_key="s3cret") as url:
        port = url.rsplit(":", 1)[1]
        with pytest.raises(ollama.ResponseError) as info:
            client(url).chat(model="codette", messages=USER)
        assert info.value.status_code == 401 and "API key" in info.value.error  # a string, not OpenAI's object
        assert httpx.get(url + "/api/tags").status_code == 401
        keyed = client(url, headers={"Authorization": "Bearer s3cret"})
        assert keyed.chat(model="codette", messages=USER).message.content == "ok"
        rebound = httpx.post(url + "/api/chat", json={"messages": USER, "stream": False},
                             headers={"Host": f"evil.example:{port}", "Authorization": "Bearer s3cret"})
        assert rebound.status_code == 403 and "--allow-host" in rebound.json()["error"]
        page = httpx.post(url + "/api/generate", json={"prompt": "read my files"},
                          headers={"Origin": "http://evil.example", "Authorization": "Bearer s3cret"})
        assert page.status_code == 403 and "access-control-allow-origin" not in page.headers


def test_a_full_queue_refuses_api_requests_with_503():
    backend = Gated(["done"])
    with running(backend, max_queue=0) as url:
        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=30) as http:
                first = asyncio.create_task(http.post(url + "/api/chat", json={"messages": USER, "stream": False}))
                deadline = time.monotonic() + 20
                while not (await http.get(url + "/health")).json()["generating"]:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.02)
                second = await http.post(url + "/api/chat", json={"messages": USER})
                third = await http.post(url + "/api/generate", json={"prompt": "hi", "stream": False})
                backend.gate.set()
                return [await first, second, third]

        first, second, third = asyncio.run(burst())
    assert first.status_code == 200 and first.json()["message"]["content"] == "done"
    for r in (second, third):
        assert r.status_code == 503 and r.headers["Retry-After"] == "2" and "busy" in r.json()["error"]


class Failing(Scripted):
    def stream(self, messages, tools=None, sampling=None):
        yield Chunk("partial ")
        raise RuntimeError("the runtime broke")


def test_a_failure_mid_stream_ends_it_with_an_error_line():
    with running(Failing(["never"])) as url:
        with pytest.raises(ollama.ResponseError, match="the runtime broke"):
            list(client(url).chat(model="codette", messages=USER, stream=True))
        assert httpx.get(url + "/health").json()["generating"] == 0


# -- Codette's own Ollama backend against `codette serve` ------------------------------------------------
def test_codettes_ollama_backend_talks_to_codette_serve(monkeypatch):
    from codette.agent.resolve import resolve_backend
    from codette.backends.base import SamplingConfig, collect
    from codette.backends.ollama import OllamaBackend

    backend = Scripted(["Let me see.\n" + call("calculator", expression="6 * 7"), "6 * 7 = 42."])
    with running(backend, model_name="served") as url:
        monkeypatch.setenv("OLLAMA_HOST", url)
        remote = resolve_backend("served")  # not a path, URL or 'codette': an Ollama model on OLLAMA_HOST
        try:
            assert isinstance(remote, OllamaBackend) and remote.host == url
            assert not OllamaBackend("missing", host=url).has_model()
            reply = remote.complete(USER, [CALC], SamplingConfig(max_new_tokens=20, temperature=0, top_k=3,
                                                                 response_format="json"))
            assert reply.tool_calls == [{"name": "calculator", "arguments": {"expression": "6 * 7"}}]
            assert reply.text == "Let me see." and reply.prompt_tokens == 11
            s = backend.samplings[-1]
            assert (s.max_new_tokens, s.temperature, s.top_k, s.response_format) == (20, 0, 3, "json")
            streamed = collect(remote.stream(USER, None, SamplingConfig(max_new_tokens=20)))
            assert streamed.text == "6 * 7 = 42." and streamed.finish_reason == "stop"
        finally:
            remote.close()
