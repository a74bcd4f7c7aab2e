"""The backends (where replies come from): the HTTP ones (OpenAI-compatible, Ollama) against loopback
servers that answer as the documented APIs do (retries, timeouts, streamed tool calls), and the local
(PyTorch) and GGUF ones on the session's tiny trained model, with llama_cpp.server on loopback."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from codette.agent import MultimodalCodette
from codette.backends.base import SamplingConfig
from codette.backends.ollama import OllamaBackend, ollama_host
from codette.backends.openai import OpenAIBackend
from codette.errors import CodetteError
from codette.persona import DEFAULT_SYSTEM
from codette.tooltable import tool_schema
from tests._loopback import Loopback, free_port
from tests.test_agent import call


# ------------------------------------------------------------------------------------------------
# HTTP backends: retries, timeouts, errors; Ollama's documented shapes
# ------------------------------------------------------------------------------------------------
def _completion(text: str) -> str:
    return json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                    "finish_reason": "stop"}], "usage": {"prompt_tokens": 9, "completion_tokens": 2}})


def test_http_backend_retries_5xx_then_succeeds_and_names_url_and_status():
    answers = iter([(500, '{"error": {"message": "warming up"}}'), (200, _completion("Hello."))])
    srv = Loopback(lambda m, p, b: (lambda s: (s[0], "application/json", [s[1]]))(next(answers)))
    try:
        backend = OpenAIBackend(srv.url, model="codette", backoff=0.01)
        assert backend.chat([{"role": "user", "content": "hi"}]) == "Hello."
        assert len(srv.requests) == 2 and srv.requests[0][1] == "/v1/chat/completions"
        always = Loopback(lambda m, p, b: (503, "application/json", ['{"error": "overloaded"}']))
        try:
            with pytest.raises(CodetteError, match=rf"{always.url}/v1/chat/completions answered HTTP 503: overloaded"):
                OpenAIBackend(always.url, model="m", retries=2, backoff=0.01).chat([{"role": "user", "content": "hi"}])
            assert len(always.requests) == 3
        finally:
            always.close()
    finally:
        srv.close()


def test_http_backend_down_and_timeout_are_clear_errors():
    port = free_port()
    with pytest.raises(CodetteError, match=rf"cannot reach http://127.0.0.1:{port}/v1/chat/completions: .*tried 2 times"):
        OpenAIBackend(f"http://127.0.0.1:{port}", model="m", retries=1, backoff=0.01).chat(
            [{"role": "user", "content": "hi"}])
    slow = Loopback(lambda m, p, b: (200, "application/x-ndjson", [None, "{}"]))
    try:
        with pytest.raises(CodetteError, match=r"did not answer within 0.5 s \(read timeout\)|stopped sending"):
            list(OllamaBackend("codette", host=slow.url, read_timeout=0.5).stream([{"role": "user", "content": "hi"}]))
    finally:
        slow.close()


@pytest.mark.timeout(120)
def test_openai_stream_of_many_argument_deltas_is_joined_in_linear_time():
    """A server that sends a call's arguments in many small events (``+=`` on them was quadratic: minutes here)."""
    backend = OpenAIBackend("http://127.0.0.1:9", model="m")
    n, piece = 60_000, "x" * 100  # 6 MB of arguments; a later check refuses them, the stream must not stall first
    line = "data: " + json.dumps({"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "function": {"arguments": piece}}]}}]})
    backend.http.post_lines = lambda path, body: iter([line] * n)
    try:
        start = time.monotonic()
        (last,) = [c for c in backend.stream([{"role": "user", "content": "hi"}]) if c.tool_calls]
        assert time.monotonic() - start < 10
        assert last.tool_calls == [{"name": "", "arguments": piece * n}]
    finally:
        backend.close()


def test_openai_stream_with_tool_call_deltas_runs_the_call(tmp_path):
    """Server-sent events as OpenAI streams them: a call's name and arguments arrive in pieces."""
    def respond(method, path, body):
        assert path == "/v1/chat/completions" and body["stream"] is True and body["model"] == "served-model"
        if body["messages"][-1]["role"] == "tool":
            events = [{"choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}]} for w in ("4", "2.")]
            events.append({"choices": [], "usage": {"prompt_tokens": 30, "completion_tokens": 2}})
        else:
            assert body["tools"] == [tool_schema("calculator")]
            frag = [{"index": 0, "id": "c1", "type": "function", "function": {"name": "calculator", "arguments": ""}},
                    {"index": 0, "function": {"arguments": '{"expression": '}},
                    {"index": 0, "function": {"arguments": '"6*7"}'}}]
            events = [{"choices": [{"index": 0, "delta": {"tool_calls": [f]}, "finish_reason": None}]} for f in frag]
            events.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
        return 200, "text/event-stream", [f"data: {json.dumps(e)}\n\n" for e in events] + ["data: [DONE]\n\n"]

    def models_or_chat(method, path, body):
        if path == "/v1/models":
            return 200, "application/json", ['{"object": "list", "data": [{"id": "served-model"}]}']
        return respond(method, path, body)

    srv = Loopback(models_or_chat)
    try:
        with MultimodalCodette(srv.url, tools=["calculator"], workspace=tmp_path) as agent:
            r = agent.respond("6 times 7?")
        assert r.text == "42." and r.tool_calls[0].data["result"] == 42 and r.error is None
        second = srv.requests[-1][2]["messages"]
        assert second[-2]["tool_calls"][0]["function"] == {"name": "calculator", "arguments": '{"expression": "6*7"}'}
        assert second[-1]["tool_call_id"] == second[-2]["tool_calls"][0]["id"]
        assert r.metrics["completion_tokens"] is None  # the first stream reported no usage: not made up
    finally:
        srv.close()


def test_http_backends_pass_the_constraints_on():
    """OpenAI-style servers get response_format, tool_choice and parallel_tool_calls (tool_choice only with
    tools, which OpenAI requires); Ollama gets format."""
    srv = Loopback(lambda m, p, b: (200, "application/json", [_completion("ok")]))
    tools = [tool_schema("calculator")]
    named = {"type": "function", "function": {"name": "calculator"}}
    try:
        backend = OpenAIBackend(srv.url, model="m")
        backend.chat([{"role": "user", "content": "hi"}], tools,
                     SamplingConfig(tool_choice=named, parallel_tool_calls=False, response_format="json"))
        body = srv.requests[-1][2]
        assert body["tool_choice"] == named and body["parallel_tool_calls"] is False
        assert body["response_format"] == {"type": "json_object"}
        backend.chat([{"role": "user", "content": "hi"}], None, SamplingConfig(tool_choice="auto"))
        assert "tool_choice" not in srv.requests[-1][2] and "parallel_tool_calls" not in srv.requests[-1][2]
    finally:
        srv.close()
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    ollama = OllamaBackend("codette", host="http://127.0.0.1:9")
    body = ollama._body([{"role": "user", "content": "hi"}], tools, SamplingConfig(response_format=schema,
                                                                                   tool_choice="required"), False)
    assert body["format"] == schema and "tool_choice" not in body


def test_ollama_host_forms():
    assert ollama_host("") == "http://127.0.0.1:11434"
    assert ollama_host("0.0.0.0") == "http://0.0.0.0:11434"
    assert ollama_host("example.org:8080") == "http://example.org:8080"
    assert ollama_host("https://ollama.internal") == "https://ollama.internal:11434"


def _ollama_server():
    """Answers as Ollama's /api/chat does (docs/api.md): a tool call first, then the final text."""
    state = {"n": 0}

    def respond(method, path, body):
        if path == "/api/show":
            known = body["model"] == "codette"
            return (200, "application/json", ['{"modelfile": "FROM codette"}']) if known else \
                (404, "application/json", [json.dumps({"error": f"model '{body['model']}' not found"})])
        assert path == "/api/chat"
        state["n"] += 1
        stamp = {"model": body["model"], "created_at": "2024-07-22T20:33:28.123648Z"}
        if body["messages"][-1]["role"] == "user":
            message = {"role": "assistant", "content": "",
                       "tool_calls": [{"function": {"name": "calculator", "arguments": {"expression": "12*12"}}}]}
            words = []
        else:
            message = None
            words = ["As ", "Codette: ", "144."]
        done = {**stamp, "message": {"role": "assistant", "content": ""}, "done_reason": "stop", "done": True,
                "total_duration": 885095291, "prompt_eval_count": 122, "prompt_eval_duration": 328493000,
                "eval_count": 33, "eval_duration": 552222000}
        if not body["stream"]:
            text = "".join(words)
            full = {**done, "message": message or {"role": "assistant", "content": text}}
            return 200, "application/json", [json.dumps(full)]
        lines = [json.dumps({**stamp, "message": message, "done": False}) + "\n"] if message else []
        lines += [json.dumps({**stamp, "message": {"role": "assistant", "content": w}, "done": False}) + "\n"
                  for w in words]
        return 200, "application/x-ndjson", lines + [json.dumps(done) + "\n"]

    return Loopback(respond)


def test_ollama_backend_speaks_the_documented_api_chat(tmp_path, monkeypatch):
    srv = _ollama_server()
    try:
        agent = MultimodalCodette("codette-via-ollama", backend=OllamaBackend("codette", host=srv.url),
                                  workspace=tmp_path, tools=["calculator"], max_new_tokens=64)
        r = agent.respond("What is 12 * 12?")
        assert r.text == "As Codette: 144." and r.tool_calls[0].data["result"] == 144
        assert r.metrics["prompt_tokens"] == 244 and r.metrics["completion_tokens"] == 66
        (_, path, first), (_, _, second) = srv.requests
        assert path == "/api/chat" and first["model"] == "codette" and first["stream"] is True
        assert first["tools"] == [tool_schema("calculator")]
        assert first["options"] == {"temperature": 0.0, "top_p": 1.0, "num_predict": 64}
        assert second["messages"][-2]["tool_calls"] == [{"function": {"name": "calculator",
                                                                      "arguments": {"expression": "12*12"}}}]
        assert second["messages"][-1] == {"role": "tool", "content": r.tool_calls[0].result, "tool_name": "calculator"}
        # Non-streaming chat() gives the same call as markup, as the evaluation expects of every backend.
        assert OllamaBackend("codette", host=srv.url).chat([{"role": "user", "content": "12*12?"}]) == \
            call("calculator", expression="12*12")
        agent.close()
        from codette.agent.resolve import resolve_backend

        monkeypatch.chdir(tmp_path)  # no codette_model/ here: the name 'codette' goes to Ollama
        assert isinstance(resolve_backend("codette", ollama_host=srv.url), OllamaBackend)
        with pytest.raises(CodetteError, match=rf"cannot find model 'llama9': .*no Ollama model 'llama9' at {srv.url}"):
            resolve_backend("llama9", ollama_host=srv.url)
    finally:
        srv.close()


# ------------------------------------------------------------------------------------------------
# Local and GGUF backends on a model trained in this run (the session's `tiny`, tests/conftest.py)
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def tiny_gguf(tiny, tmp_path_factory):
    from codette.export.gguf_export import export_gguf

    return export_gguf(tiny.checkpoint, tmp_path_factory.mktemp("agent_gguf"), "f16", modelfile=False).path


@pytest.mark.slow
def test_tiny_model_on_local_and_gguf_backends(tiny, tiny_gguf, tmp_path):
    texts = {}
    for model in (tiny.checkpoint, tiny_gguf):
        with MultimodalCodette(str(model), tools=[], workspace=tmp_path / model.suffix[1:], max_new_tokens=24) as agent:
            r = agent.respond("Who are you?")
            assert r.error is None and r.text and r.metrics["model_calls"] == 1
            sent = [{"role": "system", "content": DEFAULT_SYSTEM}, {"role": "user", "content": "Who are you?"}]
            assert r.metrics["prompt_tokens"] == agent.backend.count_tokens(sent)
            assert 0 < r.metrics["completion_tokens"] <= 24 and r.metrics["tokens_per_s"] > 0
            texts[agent.backend.name] = r.text
            # Named explicitly, all ten default tool schemas do not fit a 128-token context: a clear error,
            # then the next turn works.
            from codette.agent.core import default_tools

            agent.set_tools(default_tools())
            big = agent.respond("Who are you?")
            assert big.error and "the model's context is 128 tokens" in big.error
            agent.set_tools(None)  # the defaults are cut to what the context holds, and said so
            assert agent.tools_note and len(agent.tool_names) < 10
            agent.set_tools([])
            # A long history: the oldest turns go, the answer still comes.
            history = [m for i in range(8) for m in ({"role": "user", "content": f"Tell me about topic {i}."},
                                                    {"role": "assistant", "content": f"Topic {i} is interesting."})]
            again = agent.respond("Who are you?", history=history)
            assert again.error is None and again.metrics["dropped_turns"] >= 1
    assert texts["local"] == texts["gguf"]  # greedy decoding: the same reply from both runtimes


@pytest.mark.slow
def test_openai_backend_against_llama_cpp_server(tiny_gguf, tmp_path):
    port = free_port()
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(tiny_gguf), "--host",
                             "127.0.0.1", "--port", str(port), "--n_ctx", "128"], stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                OpenAIBackend(url, retries=0).served_model()
                break
            except CodetteError:
                assert proc.poll() is None, (tmp_path / "server.log").read_text()
                time.sleep(0.3)
        with MultimodalCodette(url, tools=[], workspace=tmp_path / "ws", max_new_tokens=16) as agent:
            assert agent.backend.name == "openai"
            r = agent.respond("Who are you?")
            assert r.error is None and r.text, r
            assert r.metrics["completion_tokens"] is None or r.metrics["completion_tokens"] <= 16
            # The server renders the GGUF's own template: its prompt has exactly our token count, and with
            # its repeat penalty (llama.cpp's default 1.1, not part of OpenAI's API) turned off its greedy
            # reply opens as ours does.
            with MultimodalCodette(str(tiny_gguf), tools=[], workspace=tmp_path / "ws2", max_new_tokens=16) as local:
                ours = local.respond("Who are you?", raw=True).text  # raw: the server's reply keeps its markers
                sent = [{"role": "system", "content": DEFAULT_SYSTEM}, {"role": "user", "content": "Who are you?"}]
                reply = agent.backend.complete(sent, sampling=SamplingConfig(max_new_tokens=16, temperature=0.0))
                assert reply.prompt_tokens == local.backend.count_tokens(sent)
            plain = httpx.post(f"{url}/v1/chat/completions", timeout=60, json={
                "messages": sent, "max_tokens": 16, "temperature": 0.0, "repeat_penalty": 1.0}).json()
            assert ours.splitlines()[0] == plain["choices"][0]["message"]["content"].strip().splitlines()[0]
            assert 0 < reply.completion_tokens <= 16 and agent.backend.chat([{"role": "user", "content": "Hi"}])
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


def test_a_gguf_without_llama_cpp_names_make_install_llama(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from codette.backends.gguf import GGUFBackend
    from codette.cli.main import app

    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # `import llama_cpp` now raises ImportError
    gguf_file = tmp_path / "x.gguf"
    gguf_file.write_bytes(b"GGUF")
    with pytest.raises(CodetteError, match=r"llama-cpp-python, which is not installed .*run `make install-llama`"):
        GGUFBackend(gguf_file)
    res = CliRunner().invoke(app, ["eval", str(gguf_file)])
    assert isinstance(res.exception, CodetteError) and "make install-llama" in str(res.exception)
