"""`codette serve`: the OpenAI API (with the official `openai` client as the peer), the agent endpoint,
the queue, deadlines and disconnects, the Host/Origin/API-key guard, and bad requests.

Most tests run a scripted backend behind a real uvicorn server on loopback, so every reply is known;
the tests at the end use tiny models trained in this run (test_serve_browser.py drives the page).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import openai
import pytest
import uvicorn

from codette.agent.markup import strip_markers
from codette.backends.base import Chunk
from codette.serve import ServeConfig, create_app
from codette.serve.completions import StopScan, split_reply
from codette.serve.guard import Guard
from tests._loopback import free_port

CALC = {"type": "function", "function": {"name": "calculator", "description": "Exact arithmetic",
                                         "parameters": {"type": "object",
                                                        "properties": {"expression": {"type": "string"}}}}}


def call(name: str, **arguments: object) -> str:
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": arguments}) + "\n</tool_call>"


class Scripted:
    """Answers from a list (the last entry repeats); records prompts and sampling; optional delay per piece."""

    name = "scripted"

    def __init__(self, replies: list[str], delay: float = 0.0, context_length: int | None = None) -> None:
        self.replies = list(replies)
        self.delay = delay
        self.prompts: list[tuple[list[dict], list[dict] | None]] = []
        self.samplings: list = []
        self.pieces_sent = 0
        self.finished = 0
        if context_length is not None:
            self.context_length = context_length

    def count_tokens(self, messages: list[dict], tools: list[dict] | None = None) -> int:
        return len(json.dumps(messages)) // 4 + len(json.dumps(tools or [])) // 4

    def stream(self, messages, tools=None, sampling=None) -> Iterator[Chunk]:
        self.prompts.append((messages, tools))
        self.samplings.append(sampling)
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        for i in range(0, len(reply), 3):  # small pieces: tags and stop strings split across chunks
            if self.delay:
                time.sleep(self.delay)
            self.pieces_sent += 1
            yield Chunk(reply[i:i + 3])
        self.finished += 1
        yield Chunk("", prompt_tokens=11, completion_tokens=max(1, len(reply) // 4), finish_reason="stop")

    def chat(self, messages, tools=None, sampling=None) -> str:
        return "".join(c.text for c in self.stream(messages, tools, sampling))


@contextmanager
def running(backend, **config) -> Iterator[str]:
    """A real server on loopback for ``backend``; yields its base URL."""
    port = free_port()
    app = create_app(backend, ServeConfig(**config))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started:
        assert time.time() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def client(url: str, key: str = "none") -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=30)


# -- the OpenAI API with the official client ---------------------------------------------------------
def test_openai_client_chat_models_and_usage():
    backend = Scripted(["Hello! I am Codette."])
    with running(backend, model_name="codette-test") as url:
        c = client(url)
        assert [m.id for m in c.models.list().data] == ["codette-test"]
        r = c.chat.completions.create(model="codette-test", messages=[
            {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
        assert r.object == "chat.completion" and r.id.startswith("chatcmpl-") and r.model == "codette-test"
        assert r.choices[0].message.content == "Hello! I am Codette." and r.choices[0].finish_reason == "stop"
        assert r.choices[0].message.tool_calls is None
        assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (11, 5, 16)
        assert backend.prompts[0] == ([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
                                      None)
        assert httpx.get(url + "/health").json()["status"] == "ok"


def test_tool_calls_come_back_structured_and_the_history_renders_back():
    backend = Scripted(["Let me work that out.\n" + call("calculator", expression="37 * 91"), "37 * 91 = 3367."])
    with running(backend) as url:
        c = client(url)
        msgs = [{"role": "user", "content": "What is 37 * 91?"}]
        r = c.chat.completions.create(model="codette", messages=msgs, tools=[CALC])
        choice = r.choices[0]
        assert choice.finish_reason == "tool_calls" and choice.message.content == "Let me work that out."
        (tc,) = choice.message.tool_calls
        assert tc.type == "function" and tc.id.startswith("call_") and tc.function.name == "calculator"
        assert json.loads(tc.function.arguments) == {"expression": "37 * 91"}
        assert backend.prompts[0][1] == [CALC]  # the client's tools reach the chat template as sent
        # The client sends the call and its result back, as OpenAI's docs show.
        msgs += [choice.message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": tc.id, "content": '{"result": 3367}'}]
        r2 = c.chat.completions.create(model="codette", messages=msgs, tools=[CALC])
        assert r2.choices[0].message.content == "37 * 91 = 3367."
        sent = backend.prompts[1][0]
        assert sent[1]["tool_calls"] == [{"type": "function", "function": {"name": "calculator",
                                                                           "arguments": {"expression": "37 * 91"}}}]
        assert sent[2] == {"role": "tool", "content": '{"result": 3367}'}


def test_streaming_text_and_tool_call_deltas_with_usage():
    backend = Scripted(["Sure. " + call("calculator", expression="2 ** 10") + " Done."])
    with running(backend) as url:
        stream = client(url).chat.completions.create(
            model="codette", messages=[{"role": "user", "content": "2 to the 10th?"}], tools=[CALC], stream=True,
            stream_options={"include_usage": True})
        chunks = list(stream)
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert "<tool_call>" not in text and text.replace(" ", "") == "Sure.Done."
    deltas = [tc for ch in chunks if ch.choices for tc in (ch.choices[0].delta.tool_calls or [])]
    assert len(deltas) == 1 and deltas[0].index == 0 and deltas[0].function.name == "calculator"
    assert json.loads(deltas[0].function.arguments) == {"expression": "2 ** 10"}
    reasons = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert reasons == ["tool_calls"]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert not chunks[-1].choices and chunks[-1].usage.prompt_tokens == 11  # the usage-only chunk comes last


def test_tool_choice_none_sends_no_tools_and_parses_nothing():
    reply = "Here: " + call("calculator", expression="1 + 1")
    backend = Scripted([reply])
    with running(backend) as url:
        r = client(url).chat.completions.create(model="codette", messages=[{"role": "user", "content": "x"}],
                                                tools=[CALC], tool_choice="none")
    assert backend.prompts[0][1] is None
    assert r.choices[0].message.content == reply and r.choices[0].message.tool_calls is None


def test_markup_that_does_not_parse_is_returned_as_written():
    reply = 'Trying. <tool_call>{"name": "calculator", "arguments": {"expression": </tool_call>'
    backend = Scripted([reply])
    with running(backend) as url:
        c = client(url)
        r = c.chat.completions.create(model="codette", messages=[{"role": "user", "content": "x"}], tools=[CALC])
        assert r.choices[0].message.content == reply and r.choices[0].finish_reason == "stop"
        chunks = list(c.chat.completions.create(model="codette", messages=[{"role": "user", "content": "x"}],
                                                tools=[CALC], stream=True))
    streamed = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert "Trying." in streamed and '"expression":' in streamed  # nothing silently dropped


def test_stop_sequences_sampling_and_seed_reach_the_backend():
    backend = Scripted(["one two STOP three four"])
    with running(backend) as url:
        c = client(url)
        r = c.chat.completions.create(model="codette", messages=[{"role": "user", "content": "count"}], stop=["STOP"],
                                      temperature=0.2, top_p=0.9, seed=42, max_tokens=33)
        assert r.choices[0].message.content == "one two" and r.choices[0].finish_reason == "stop"
        s = backend.samplings[-1]
        assert (s.temperature, s.top_p, s.seed, s.max_new_tokens) == (0.2, 0.9, 42, 33)
        chunks = list(c.chat.completions.create(model="codette", messages=[{"role": "user", "content": "count"}],
                                                stop="o STO", stream=True))
        assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == "one tw"


def test_response_format_reaches_the_backend_from_the_client_and_from_codettes_openai_backend():
    from codette.backends.base import SamplingConfig
    from codette.backends.openai import OpenAIBackend

    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    backend = Scripted(['{"answer": "yes"}'])
    with running(backend) as url:
        c = client(url)
        msgs = [{"role": "user", "content": "yes?"}]
        r = c.chat.completions.create(model="codette", messages=msgs, response_format={"type": "json_object"})
        assert json.loads(r.choices[0].message.content) == {"answer": "yes"}
        assert backend.samplings[-1].response_format == "json"
        c.chat.completions.create(model="codette", messages=msgs, response_format={
            "type": "json_schema", "json_schema": {"name": "answer", "schema": schema}})
        assert backend.samplings[-1].response_format == schema
        c.chat.completions.create(model="codette", messages=msgs, response_format={"type": "text"})
        assert backend.samplings[-1].response_format is None
        remote = OpenAIBackend(url, model="codette", retries=0)
        try:
            remote.complete(msgs, None, SamplingConfig(response_format=schema))
        finally:
            remote.close()
        assert backend.samplings[-1].response_format == schema


def test_a_stop_sequence_ends_the_generation_before_the_next_request():
    """Stopping early closes the generation: its thread has ended when the answer comes back."""
    backend = Scripted(["ab STOP " + "x" * 600], delay=0.005)  # 203 pieces, about 1 s if not stopped
    with running(backend) as url:
        c = client(url)
        for stream in (False, True):
            before = backend.pieces_sent
            r = c.chat.completions.create(model="codette", messages=[{"role": "user", "content": "go"}],
                                          stop=["STOP"], stream=stream)
            text = "".join(ch.choices[0].delta.content or "" for ch in r if ch.choices) if stream else \
                r.choices[0].message.content
            assert text.strip() == "ab"
            sent = backend.pieces_sent
            time.sleep(0.2)
            assert backend.pieces_sent == sent < before + 20 and backend.finished == 0


def test_stop_scan_holds_back_a_possible_start():
    scan = StopScan(["</end>"])
    assert scan.feed("abc</e") == "abc" and scan.feed("x") == "</ex" and scan.feed("</en") == ""
    assert scan.feed("d> tail") == "" and scan.stopped and scan.flush() == ""
    assert split_reply("plain", True) == ("plain", [])


def test_a_prompt_over_the_context_is_a_400_with_both_counts():
    backend = Scripted(["never"], context_length=64)
    with running(backend) as url:
        with pytest.raises(openai.BadRequestError) as info:
            client(url).chat.completions.create(model="codette", messages=[{"role": "user", "content": "x" * 2000}])
    err = info.value.body
    assert err["code"] == "context_length_exceeded" and "this model's context is 64 tokens" in err["message"]
    assert f"the prompt is {backend.count_tokens([{'role': 'user', 'content': 'x' * 2000}])} tokens" in err["message"]
    assert backend.prompts == []


# -- bad requests: each answered clearly, and the server keeps serving --------------------------------
GOOD = {"model": "codette", "messages": [{"role": "user", "content": "Hi"}]}


@pytest.mark.parametrize(("body", "status", "needle"), [
    (b'{"messages": [', 400, "not valid JSON"),
    (b"", 400, "the body is empty"),
    ({**GOOD, "temperature": "hot"}, 400, "temperature:"),
    ({**GOOD, "messages": []}, 400, "messages:"),
    ({**GOOD, "messages": [{"role": "wizard", "content": "hi"}]}, 400, "messages.0.role:"),
    ({**GOOD, "messages": [{"role": "tool", "content": "42"}]}, 400, "messages.0: a tool message must follow"),
    ({**GOOD, "messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}]}, 400,
     "messages.1: a system message may only come first"),
    ({**GOOD, "max_tokens": 0}, 400, "max_tokens:"),
    ({**GOOD, "max_tokens": -5}, 400, "max_tokens:"),
    ({**GOOD, "tool_choice": "required"}, 400, "tool_choice:"),
    ({**GOOD, "n": 3}, 400, "n:"),
    ({**GOOD, "messages": [{"role": "user"}]}, 400, "messages.0.content: a user message needs content"),
    ({**GOOD, "stop": ["a", "b", "c", "d", "e"]}, 400, "stop:"),
    ({**GOOD, "seed": 2 ** 64}, 400, "seed:"),  # torch's generator takes 64 bits; was a 500 mid-generation
    ({**GOOD, "seed": -(2 ** 63) - 1}, 400, "seed:"),
    ({**GOOD, "messages": [{"role": "user", "content": "a\ud800b"}]}, 400,
     "messages.0.content: not valid Unicode: a lone surrogate \\ud800 at character 1"),
    ({**GOOD, "messages": [{"role": "user", "content": [{"type": "text", "text": "\udfff"}]}]}, 400,
     "messages.0.content.0.text: not valid Unicode"),
    ({**GOOD, "messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "tool_calls": [
        {"type": "function", "function": {"name": "calculator", "arguments": {"expression": "\ud83d"}}}]}]}, 400,
     "messages.1.tool_calls.0.function.arguments.expression: not valid Unicode"),
])
def test_bad_bodies_get_a_400_naming_the_field(body, status, needle):
    backend = Scripted(["ok"])
    with running(backend) as url:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        r = httpx.post(url + "/v1/chat/completions", content=content, headers={"Content-Type": "application/json"})
        assert r.status_code == status, r.text
        assert needle in r.json()["error"]["message"], r.json()
        assert backend.prompts == []
        assert httpx.post(url + "/v1/chat/completions", json=GOOD).status_code == 200  # still serving


def test_unknown_fields_are_ignored_oversized_and_non_json_bodies_refused():
    with running(Scripted(["ok"]), max_body=4096) as url:
        r = httpx.post(url + "/v1/chat/completions", json={**GOOD, "frequency_penalty": 0.5, "user": "u1",
                                                            "logit_bias": {}, "messages": [{"role": "user",
                                                                                            "content": "Hi", "x": 1}]})
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "ok"
        big = httpx.post(url + "/v1/chat/completions", json={**GOOD, "messages": [{"role": "user", "content": "x" * 9000}]})
        assert big.status_code == 413 and "larger than 4,096 bytes" in big.json()["error"]["message"]
        form = httpx.post(url + "/v1/chat/completions", content=b"messages=hi",
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert form.status_code == 415 and "must be JSON" in form.json()["error"]["message"]
        assert httpx.post(url + "/v1/chat/completions", json=GOOD).status_code == 200


def post_raw(url: str, body: dict) -> httpx.Response:
    """POST ``body`` as JSON with every non-ASCII character escaped (so lone surrogates can be sent)."""
    return httpx.post(url, content=json.dumps(body).encode(), headers={"Content-Type": "application/json"})


def test_the_agent_refuses_text_that_is_not_unicode_and_keeps_serving(tmp_path):
    backend = Scripted(["Hello."])
    with running(backend, workspace=tmp_path / "ws", agent_tools=["calculator"]) as url:
        for body, field in (({"prompt": "Hi", "history": [{"role": "user", "content": "x\ud800"},
                                                          {"role": "assistant", "content": "ok"}]}, "history.0.content"),
                            ({"prompt": "a\udc00"}, "prompt")):
            r = post_raw(url + "/v1/agent", body)
            assert r.status_code == 400, r.text
            error = r.json()["error"]
            assert error["message"].startswith(f"{field}: not valid Unicode") and error["param"] == field
        assert backend.prompts == []
        assert agent_events(url, {"prompt": "Hi"})[-1]["type"] == "done"  # still serving


class Failing(Scripted):
    """A backend whose generation fails with an error that is not the user's (a bug, a runtime failure)."""

    def stream(self, messages, tools=None, sampling=None) -> Iterator[Chunk]:
        self.prompts.append((messages, tools))
        raise RuntimeError("the runtime broke")
        yield  # a generator, like every backend's stream


def test_a_failure_inside_a_stream_ends_it_with_an_error_event(tmp_path):
    backend = Failing(["never"])
    with running(backend, workspace=tmp_path / "ws", agent_tools=["calculator"]) as url:
        events = agent_events(url, {"prompt": "Hi"})
        assert events and events[-1]["type"] == "error" and "the runtime broke" in events[-1]["error"]
        with httpx.stream("POST", url + "/v1/chat/completions", json={**GOOD, "stream": True}, timeout=30) as r:
            data = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
        assert data[-1] == "[DONE]" and "the runtime broke" in json.loads(data[-2])["error"]["message"]
        assert httpx.get(url + "/health").json()["generating"] == 0


@pytest.mark.parametrize(("config", "needle"), [
    ({"agent_tools": ["bogus"]}, "unknown tool 'bogus'"),
    ({"agent_tools": ["execute_python"]}, "execute_python runs model-written code"),
])
def test_agent_tools_are_checked_when_the_app_is_made(config, needle):
    from codette.errors import CodetteError

    with pytest.raises(CodetteError, match=needle):
        create_app(Scripted(["ok"]), ServeConfig(**config))
    create_app(Scripted(["ok"]), ServeConfig(agent_tools=["execute_python"], enable_python=True))


def test_the_temporary_workspace_goes_with_an_app_that_never_ran():
    import gc

    import tempfile
    from pathlib import Path

    def folders() -> set[Path]:
        return set(Path(tempfile.gettempdir()).glob("codette-serve-*"))

    before = folders()
    app = create_app(Scripted(["ok"]), ServeConfig())
    made = folders() - before
    assert len(made) == 1 and next(iter(made)).is_dir()
    del app
    gc.collect()
    assert not next(iter(made)).exists()


def test_a_port_in_use_is_refused_before_the_model_loads(monkeypatch, capsys):
    from codette.errors import CodetteError
    from codette.serve import serve

    loaded: list[str] = []
    monkeypatch.setattr("codette.agent.resolve.resolve_backend", lambda model, **kw: loaded.append(model))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(CodetteError, match=f"--port {port}: the port is already in use on 127.0.0.1"):
            serve("codette", port, ServeConfig())
    assert loaded == [] and "serving" not in capsys.readouterr().out


def test_serve_answers_on_the_port_it_bound_first(monkeypatch, capsys):
    """serve() binds the port before the model loads and hands that socket to uvicorn."""
    from codette.serve import serve

    servers: list[uvicorn.Server] = []

    class Recorded(uvicorn.Server):
        def __init__(self, config: uvicorn.Config) -> None:
            super().__init__(config)
            servers.append(self)

    monkeypatch.setattr(uvicorn, "Server", Recorded)
    monkeypatch.setattr("codette.agent.resolve.resolve_backend", lambda model, **kw: Scripted(["ok"]))
    port = free_port()
    thread = threading.Thread(target=serve, args=("codette", port, ServeConfig()), kwargs={"log_level": "warning"},
                              daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not (servers and servers[0].started):
        assert time.time() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.02)
    try:
        r = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=GOOD)
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "ok"
    finally:
        servers[0].should_exit = True
        thread.join(timeout=10)
    assert f"serving codette (scripted backend) on http://127.0.0.1:{port}/" in capsys.readouterr().out


@pytest.mark.parametrize(("args", "needle"), [
    (["--tools", "bogus"], "unknown tool 'bogus'"),
    (["--tools", "execute_python"], "execute_python runs model-written code: pass enable_python=True (CLI: --python)"),
    (["--port", "BUSY"], "--port BUSY: the port is already in use on 127.0.0.1"),
    (["--ctx-size", "1"], "--ctx-size must be 2 tokens or more, got 1"),
    (["--threads", "0"], "--threads must be 1 or more, got 0"),
], ids=["unknown-tool", "python-without-flag", "port-in-use", "ctx-size", "threads"])
def test_codette_serve_refuses_at_start_up_in_one_line(args, needle):
    from tests._pipeline import codette

    with socket.socket() as busy:  # a port someone else is listening on
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        args = [port if a == "BUSY" else a for a in args]
        if "--port" not in args:
            args += ["--port", str(free_port())]
        proc = codette("serve", "no-such-model.pt", *args, timeout=120)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert needle.replace("BUSY", port) in " ".join(proc.stderr.split())
    assert "serving" not in proc.stdout


# -- one model, many clients ---------------------------------------------------------------------------
class Gated(Scripted):
    """A Scripted backend whose generations wait until ``gate`` is set (so requests pile up)."""

    def __init__(self, replies: list[str]) -> None:
        super().__init__(replies)
        self.gate = threading.Event()

    def stream(self, messages, tools=None, sampling=None):
        self.gate.wait(30)
        yield from super().stream(messages, tools, sampling)


def test_requests_beyond_the_queue_get_503_and_none_is_dropped():
    backend = Gated(["done"])
    with running(backend, max_queue=2) as url:
        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=30) as http:
                tasks = [asyncio.create_task(http.post(url + "/v1/chat/completions", json=GOOD)) for _ in range(8)]
                deadline = time.monotonic() + 20
                while sum(t.done() for t in tasks) < 5:  # 1 generating + 2 waiting; the other 5 refused at once
                    assert time.monotonic() < deadline, [t.done() for t in tasks]
                    await asyncio.sleep(0.02)
                health = (await http.get(url + "/health")).json()
                assert (health["generating"], health["waiting"]) == (1, 2), health
                backend.gate.set()
                return await asyncio.gather(*tasks)

        responses = asyncio.run(burst())
        codes = sorted(r.status_code for r in responses)
        assert codes == [200] * 3 + [503] * 5, codes
        for r in responses:
            if r.status_code == 503:
                assert r.headers["Retry-After"] == "2" and "busy" in r.json()["error"]["message"]
        assert backend.finished == 3  # every accepted request ran to its end
        assert httpx.get(url + "/health").json()["waiting"] == 0
        assert httpx.post(url + "/v1/chat/completions", json=GOOD).status_code == 200


def test_a_request_past_its_deadline_is_stopped_with_504():
    backend = Scripted(["y" * 300], delay=0.02)  # 100 pieces: 2 s
    with running(backend, timeout_s=0.4) as url:
        t0 = time.monotonic()
        r = httpx.post(url + "/v1/chat/completions", json=GOOD, timeout=30)
        assert r.status_code == 504 and "deadline" in r.json()["error"]["message"]
        assert time.monotonic() - t0 < 1.5
        sent = backend.pieces_sent
        time.sleep(0.2)
        assert backend.pieces_sent - sent <= 1 and backend.finished == 0  # the generation stopped too


def test_a_client_that_disconnects_mid_stream_stops_its_generation():
    backend = Scripted(["z" * 600], delay=0.01)  # 200 pieces: 2 s if nobody stops it
    with running(backend) as url:
        with httpx.Client(timeout=30) as http:
            with http.stream("POST", url + "/v1/chat/completions", json={**GOOD, "stream": True}) as r:
                assert r.status_code == 200
                lines = r.iter_lines()
                for line in lines:
                    if '"content": "zzz"' in line:
                        break
        deadline = time.time() + 3
        while httpx.get(url + "/health").json()["generating"] and time.time() < deadline:
            time.sleep(0.05)
        assert httpx.get(url + "/health").json()["generating"] == 0
        stopped_at = backend.pieces_sent
        time.sleep(0.2)
        assert backend.pieces_sent == stopped_at < 150 and backend.finished == 0
        backend.replies = ["next"]
        assert httpx.post(url + "/v1/chat/completions", json=GOOD).json()["choices"][0]["message"]["content"] == "next"


# -- who may call ---------------------------------------------------------------------------------------
def test_dns_rebinding_and_cross_site_pages_are_refused():
    with running(Scripted(["ok"]), allow_origins=["http://localhost:3000"]) as url:
        port = url.rsplit(":", 1)[1]
        rebound = httpx.post(url + "/v1/chat/completions", json=GOOD, headers={"Host": f"evil.example:{port}"})
        assert rebound.status_code == 403 and "--allow-host" in rebound.json()["error"]["message"]
        assert httpx.get(url + "/", headers={"Host": f"attacker.test:{port}"}).status_code == 403
        evil = httpx.post(url + "/v1/agent", json={"prompt": "read my files"}, headers={"Origin": "http://evil.example"})
        assert evil.status_code == 403 and "access-control-allow-origin" not in evil.headers
        pre = httpx.options(url + "/v1/chat/completions", headers={"Origin": "http://evil.example",
                                                                  "Access-Control-Request-Method": "POST"})
        assert pre.status_code == 403 and "access-control-allow-origin" not in pre.headers
        assert httpx.post(url + "/v1/chat/completions", json=GOOD, headers={"Origin": "null"}).status_code == 403
        same = httpx.post(url + "/v1/chat/completions", json=GOOD, headers={"Origin": url})
        assert same.status_code == 200
        allowed = httpx.post(url + "/v1/chat/completions", json=GOOD, headers={"Origin": "http://localhost:3000"})
        assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == "http://localhost:3000"
        pre = httpx.options(url + "/v1/chat/completions", headers={"Origin": "http://localhost:3000",
                                                                  "Access-Control-Request-Method": "POST"})
        assert pre.status_code == 204 and "POST" in pre.headers["access-control-allow-methods"]
        assert httpx.get(url.replace("127.0.0.1", "localhost") + "/health").status_code == 200


def test_host_rules_for_a_server_on_every_interface():
    open_guard = Guard(None, bind_host="0.0.0.0", allow_hosts=["codette.lan"])
    assert open_guard.host_ok("192.168.1.20") and open_guard.host_ok("codette.lan") and open_guard.host_ok("localhost")
    assert not open_guard.host_ok("evil.example") and not open_guard.host_ok("")
    local = Guard(None)
    assert local.host_ok("127.0.0.1") and local.host_ok("::1") and not local.host_ok("192.168.1.20")


def test_api_key():
    with running(Scripted(["ok"]), api_key="s3cret") as url:
        with pytest.raises(openai.AuthenticationError):
            client(url, "wrong").chat.completions.create(model="codette", messages=GOOD["messages"])
        assert httpx.post(url + "/v1/chat/completions", json=GOOD).status_code == 401
        r = client(url, "s3cret").chat.completions.create(model="codette", messages=GOOD["messages"])
        assert r.choices[0].message.content == "ok"
        assert httpx.get(url + "/health").status_code == 200 and httpx.get(url + "/").status_code == 200


# -- Codette's agent over HTTP ------------------------------------------------------------------------
def agent_events(url: str, body: dict) -> list[dict]:
    events = []
    with httpx.stream("POST", url + "/v1/agent", json=body, timeout=30) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    return events


def test_agent_endpoint_runs_tools_on_the_server_and_streams_the_loop(tmp_path):
    backend = Scripted([call("calculator", expression="12 * 34"), "12 * 34 = 408."])
    with running(backend, workspace=tmp_path / "ws", agent_tools=["calculator", "read_file"]) as url:
        info = httpx.get(url + "/v1/agent/info").json()
        assert info["tools"] == ["calculator", "read_file"] and "newton" in info["perspectives"]
        events = agent_events(url, {"prompt": "What is 12 * 34?", "perspectives": ["newton"]})
        kinds = [e["type"] for e in events]
        assert kinds[0] == "tool_call" and "tool_result" in kinds and kinds[-1] == "done"
        result = next(e for e in events if e["type"] == "tool_result")
        assert result["ok"] and json.loads(result["result"])["result"] == 408 and result["seconds"] >= 0
        done = events[-1]["response"]
        assert done["text"] == "12 * 34 = 408." and done["error"] is None
        assert done["perspectives"]["asked"] == ["newton"]
        assert backend.prompts[0][0][-1]["content"].startswith("From the Newton perspective:")
        # tools off: none offered to the model
        backend.replies = ["Hello."]
        agent_events(url, {"prompt": "Hi", "tools": False, "history": done["messages"]})
        assert backend.prompts[-1][1] is None and len(backend.prompts[-1][0]) > 3  # history went along
        bad = httpx.post(url + "/v1/agent", json={"prompt": "x", "perspectives": ["yoda"]})
        assert bad.status_code == 400 and "unknown perspective 'yoda'" in bad.json()["error"]["message"]


def test_control_markers_are_left_out_of_the_content_unless_raw(tmp_path):
    """<consciousness> and <perspective> KEY are the model's, not the reader's: chat completions (whole and
    streamed, where Scripted splits the markers across 3-character pieces) and the agent leave them out;
    ``raw: true`` keeps them."""
    marked = "<consciousness> I am Codette.\n<perspective> newton\nForces cause motion."
    clean = "I am Codette.\nForces cause motion."
    with running(Scripted([marked]), workspace=tmp_path / "ws") as url:
        c = client(url)
        messages = [{"role": "user", "content": "Who are you?"}]
        assert c.chat.completions.create(model="codette", messages=messages).choices[0].message.content == clean
        raw = c.chat.completions.create(model="codette", messages=messages, extra_body={"raw": True})
        assert raw.choices[0].message.content == marked
        for extra, expected in (({}, clean), ({"raw": True}, marked)):
            pieces = [ch.choices[0].delta.content for ch in c.chat.completions.create(
                model="codette", messages=messages, stream=True, extra_body=extra) if ch.choices]
            assert "".join(p or "" for p in pieces) == expected
            if not extra:
                assert not any(p and ("<" in p or "newton" in p) for p in pieces)
        events = agent_events(url, {"prompt": "Who are you?", "tools": False})
        done = events[-1]["response"]
        assert "".join(e["text"] for e in events if e["type"] == "text") == done["text"] == clean
        assert done["markers"] == {"consciousness": True, "perspectives": ["newton"]}
        assert done["messages"][-1]["content"] == marked  # the history the client sends back, for the model
        events = agent_events(url, {"prompt": "Who are you?", "tools": False, "raw": True})
        assert events[-1]["response"]["text"] == marked
        bad = httpx.post(url + "/v1/agent", json={"prompt": "x", "raw": "sometimes"})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "raw"


def test_the_page_is_served_with_a_strict_policy():
    with running(Scripted(["ok"])) as url:
        r = httpx.get(url + "/")
    assert r.status_code == 200 and "<title>Codette</title>" in r.text
    assert "default-src 'self'" in r.headers["content-security-policy"] and r.headers["x-frame-options"] == "DENY"
    assert "innerHTML" not in r.text  # model and tool text is shown with textContent only


# -- a model trained in this run (the session's `tiny`, tests/conftest.py) ------------------------------
@pytest.mark.slow
def test_a_trained_checkpoint_through_the_openai_client(tiny):
    from codette.backends.local import LocalBackend

    backend = LocalBackend.from_checkpoint(tiny.checkpoint)
    msgs = [{"role": "user", "content": "Who are you?"}]
    with running(backend) as url:
        c = client(url)
        r = c.chat.completions.create(model="codette", messages=msgs, temperature=0, max_tokens=20)
        chunks = list(c.chat.completions.create(model="codette", messages=msgs, temperature=0, max_tokens=20,
                                                stream=True, stream_options={"include_usage": True}))
    streamed = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert r.choices[0].message.content and streamed.strip() == r.choices[0].message.content
    # the server's content is the model's reply with its control markers taken out (raw: true keeps them)
    assert r.choices[0].message.content == strip_markers(backend.chat(msgs, None, _greedy(20)))[0].strip()
    assert r.usage.prompt_tokens == backend.count_tokens(msgs) and 0 < r.usage.completion_tokens <= 20
    assert chunks[-1].usage.completion_tokens == r.usage.completion_tokens


def _greedy(n: int):
    from codette.backends.base import SamplingConfig

    return SamplingConfig(max_new_tokens=n, temperature=0.0)
