"""The agent: the tool loop's mechanics (scripted backend), the context policy, the workspace, and
`codette ask`/`codette chat` on a tiny model trained in this run (the backends: test_backends.py)."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from codette.agent import ContextOverflow, MultimodalCodette, Response
from codette.agent.context import fit, split_turns
from codette.agent.markup import MarkupFilter
from codette.backends.base import Chunk, collect
from codette.errors import CodetteError
from codette.persona import DEFAULT_SYSTEM, PERSPECTIVE_MARK
from codette.tokenizer import render
from codette.tooltable import tool_schema
from tests._loopback import Loopback, free_port

ROOT = Path(__file__).resolve().parents[1]


def call(name: str, **arguments: object) -> str:
    return f'<tool_call>\n{json.dumps({"name": name, "arguments": arguments})}\n</tool_call>'


class Scripted:
    """A backend that answers from a script (one entry per model call) and records every prompt.

    An entry is the reply text, a Chunk list (structured calls), or an exception to raise. With a
    tokenizer it counts tokens like a real backend, so the context policy applies.
    """

    name = "scripted"

    def __init__(self, replies: list, tokenizer=None, context_length: int | None = None) -> None:
        self.replies = list(replies)
        self.prompts: list[tuple[list[dict], list[dict] | None]] = []
        self.samplings: list = []
        self.tokenizer = tokenizer
        if tokenizer is not None:
            self.context_length = context_length

    def count_tokens(self, messages: list[dict], tools: list[dict] | None = None) -> int:
        return len(self.tokenizer.encode(render(messages, tools, add_generation_prompt=True)))

    def stream(self, messages, tools=None, sampling=None):
        self.prompts.append((json.loads(json.dumps(messages)), tools))
        self.samplings.append(sampling)
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        if isinstance(reply, list):
            yield from reply
            return
        for i in range(0, len(reply), 3):  # small pieces: tags split across chunks
            yield Chunk(reply[i:i + 3])
        yield Chunk("", prompt_tokens=7, completion_tokens=max(1, len(reply) // 4), finish_reason="stop")

    def chat(self, messages, tools=None, sampling=None):
        return collect(self.stream(messages, tools, sampling)).text


@pytest.fixture
def agent_for(tmp_path):
    made = []

    def make(replies, **kwargs):
        backend = kwargs.pop("backend", None) or Scripted(replies)
        agent = MultimodalCodette(backend=backend, workspace=kwargs.pop("workspace", tmp_path / "ws"), **kwargs)
        made.append(agent)
        return agent, backend

    yield make
    for a in made:
        a.close()


# ------------------------------------------------------------------------------------------------
# The loop's mechanics
# ------------------------------------------------------------------------------------------------
def test_call_is_parsed_run_and_its_result_fed_back(agent_for):
    agent, backend = agent_for(["Let me compute.\n" + call("calculator", expression="17 * 23"),
                                "As Codette I checked: 17 * 23 = 391."])
    events = list(agent.iter_events("What is 17 * 23?"))
    r = events[-1].data["response"]
    assert [e.type for e in events if e.type != "text"] == ["tool_call", "tool_result", "done"]
    shown = "".join(e.data["text"] for e in events if e.type == "text")
    assert "<tool_call>" not in shown and shown.startswith("Let me compute.") and shown.endswith("= 391.")
    assert r.text == "As Codette I checked: 17 * 23 = 391." and r.error is None
    assert [(c.name, c.arguments, c.ok, c.round) for c in r.tool_calls] == [("calculator", {"expression": "17 * 23"},
                                                                             True, 1)]
    assert r.tool_calls[0].data["result"] == 391
    # The first prompt: persona system prompt and the compact schemas of every tool but execute_python.
    first, tools = backend.prompts[0]
    assert first[0] == {"role": "system", "content": DEFAULT_SYSTEM}
    assert tools == [tool_schema(n) for n in agent.tool_names] and "execute_python" not in agent.tool_names
    assert len(tools) == 10
    # The second prompt carries the call and the tool's real result.
    second, _ = backend.prompts[1]
    assert second[-2]["tool_calls"][0]["function"] == {"name": "calculator", "arguments": {"expression": "17 * 23"}}
    assert second[-1] == {"role": "tool", "content": r.tool_calls[0].result}
    m = r.metrics
    assert m["tool_rounds"] == 1 and m["model_calls"] == 2 and m["repairs"] == 0
    assert m["prompt_tokens"] == 14 and m["completion_tokens"] > 0 and m["tokens_per_s"] > 0
    assert m["self_reference"] is True and m["identity_contradictions"] == []
    # The turn's messages continue the history; the Response is JSON.
    assert [x["role"] for x in r.messages] == ["user", "assistant", "tool", "assistant"]
    assert json.loads(r.to_json())["tool_calls"][0]["name"] == "calculator"


def test_several_calls_in_one_reply_run_in_order_and_all_results_go_back(agent_for):
    two = call("write_file", path="a.txt", content="alpha") + "\n" + call("read_file", path="a.txt")
    agent, backend = agent_for([two, "The file says alpha."])
    r = agent.respond("Write alpha to a.txt and read it back.")
    assert [c.name for c in r.tool_calls] == ["write_file", "read_file"]
    assert all(c.ok for c in r.tool_calls) and "alpha" in r.tool_calls[1].result
    sent, _ = backend.prompts[1]
    assert [x["role"] for x in sent[-3:]] == ["assistant", "tool", "tool"]
    assert len(sent[-3]["tool_calls"]) == 2 and "alpha" in sent[-1]["content"]


def test_structured_tool_calls_from_a_server_are_accepted(agent_for):
    structured = [Chunk("", [{"name": "calculator", "arguments": '{"expression": "2 ** 10"}'}], 5, 3, "tool_calls")]
    agent, _ = agent_for([structured, "1024."])
    r = agent.respond("What is 2 to the 10th?")
    assert r.tool_calls[0].data["result"] == 1024 and r.text == "1024."


def test_malformed_call_gets_a_repair_turn(agent_for):
    broken = '<tool_call>\n{"name": "calculator", "arguments": {"expression": "1+1"</tool_call>'
    agent, backend = agent_for([broken, call("calculator", expression="1+1"), "2."])
    events = list(agent.iter_events("1+1?"))
    r = events[-1].data["response"]
    assert [e.data["try"] for e in events if e.type == "repair"] == [1]
    assert r.metrics["repairs"] == 1 and r.text == "2." and r.error is None
    repair_prompt, _ = backend.prompts[1]
    assert repair_prompt[-1]["role"] == "tool" and "malformed JSON" in repair_prompt[-1]["content"]
    assert "<tool_call>" in repair_prompt[-1]["content"]  # it shows the format to use
    # The repair exchange is not part of the history the turn returns.
    assert [x["role"] for x in r.messages] == ["user", "assistant", "tool", "assistant"]


def test_repairs_exhausted_are_reported_and_the_agent_keeps_working(agent_for):
    broken = "<tool_call>\n{not json}\n</tool_call>"
    agent, backend = agent_for([broken, broken, "Hello, I am Codette."], repair_tries=1)
    r = agent.respond("Compute something.")
    assert r.error is not None and "still invalid after 1 repair tries" in r.error and "malformed JSON" in r.error
    assert r.tool_calls == []
    assert agent.respond("Hi").text == "Hello, I am Codette."


QUOTES = '"' + '\\"' * (1024 * 1024 - 1)  # '"\"\"...' unterminated: 2 MiB - 1 characters, inside every limit


@pytest.mark.timeout(120)  # the quadratic scans took hours here: fail, never hang the run
@pytest.mark.parametrize(("reply", "needle"), [
    ("<tool_call>" + QUOTES + "</tool_call>", "malformed JSON"),
    ("<tool_call>" * (len(QUOTES) // len("<tool_call>")), "without '</tool_call>'"),
], ids=["escaped-quotes-body", "unclosed-tags"])
def test_a_worst_case_tool_call_is_refused_in_linear_time(agent_for, reply, needle):
    """2 MiB of hostile markup through the agent's parser: a clear error in seconds, and the agent still works."""
    agent, _ = agent_for([[Chunk(reply)], [Chunk(reply)], "Hello, I am Codette."], repair_tries=1)
    start = time.monotonic()
    r = agent.respond("Compute something.")
    assert time.monotonic() - start < 10
    assert r.error is not None and "still invalid after 1 repair tries" in r.error and needle in r.error
    assert agent.respond("Hi").text == "Hello, I am Codette."


@pytest.mark.parametrize("bad, expected", [
    (call("calculator", expression="1+1", precision=3), "unexpected argument 'precision'"),
    (call("calculator", expression=5), "invalid argument 'expression'"),
    (call("calculator"), "missing required argument 'expression'"),
    (call("teleport", to="Mars"), "unknown tool 'teleport'"),
    (call("execute_python", code="print(1)"), "unknown tool 'execute_python'"),  # off by default
])
def test_invalid_calls_are_refused_before_anything_runs(agent_for, bad, expected):
    agent, backend = agent_for([bad, "Sorry, I could not do that."])
    r = agent.respond("Do it.")
    assert r.metrics["repairs"] == 1 and r.tool_calls == [] and r.error is None
    assert expected in backend.prompts[1][0][-1]["content"]


def test_calls_are_held_to_the_full_schemas_unless_constrain_is_off(agent_for):
    """The backend is asked for lazy constrained calls against the Toolbox's full schemas (the prompt keeps
    the compact ones); a backend that cannot constrain still gets its bad call refused before it runs."""
    agent, backend = agent_for([call("calculator", expression=5), "Sorry."], tools=["calculator", "read_file"])
    r = agent.respond("Do it.")
    assert r.tool_calls == [] and r.metrics["repairs"] == 1
    sampled = backend.samplings[0]
    assert sampled.tool_choice == "auto" and sampled.call_schemas == agent.toolbox.schemas()
    assert sampled.call_schemas[0]["function"]["parameters"]["required"] == ["expression"]
    assert backend.prompts[0][1] == agent.tool_schemas()  # what the model reads is unchanged
    off, backend = agent_for(["Hi."], constrain=False, workspace=agent.workspace)
    off.respond("Hi")
    assert backend.samplings[0].tool_choice is None and backend.samplings[0].call_schemas is None


BAD_CALLS = ['<tool_call>\n{"name": "calculator", "arguments": {"expression": 42}}\n</tool_call>',
             '<tool_call>\n{"name": "rm_rf", "arguments": {"path": "/"}}\n</tool_call>']


@pytest.mark.parametrize("bad", BAD_CALLS, ids=["wrong-type", "unknown-tool"])
@pytest.mark.parametrize("constrain", [True, False])
def test_a_model_that_wants_a_bad_call_never_runs_one(tokenizer, tmp_path, monkeypatch, bad, constrain):
    """A model (on the PyTorch backend) that spells a bad call: held, it makes a valid call of an offered
    tool; unheld, the call is refused and repaired. Either way no tool runs with bad arguments."""
    import jsonschema

    from codette.tools import Toolbox
    from codette.tooltable import SPECS
    from tests.test_constraints import scripted_backend

    ran = []
    real = Toolbox.run_call

    def spy(self, tool_call):
        jsonschema.validate(tool_call.arguments, SPECS[tool_call.name].parameters)
        ran.append(tool_call)
        return real(self, tool_call)

    monkeypatch.setattr(Toolbox, "run_call", spy)
    backend = scripted_backend(tokenizer, [bad, "Done."])
    with MultimodalCodette(backend=backend, tools=["calculator"], workspace=tmp_path, constrain=constrain) as agent:
        r = agent.respond("Compute it.")
    assert r.error is None and r.text == "Done."
    if constrain:
        assert [c.name for c in ran] == ["calculator"] and r.metrics["repairs"] == 0
    else:
        assert ran == [] and r.metrics["repairs"] == 1


def test_a_failing_tool_is_a_result_the_model_explains(agent_for):
    agent, backend = agent_for([call("read_file", path="missing.txt"), "The file missing.txt does not exist."])
    r = agent.respond("Read missing.txt")
    (c,) = r.tool_calls
    assert c.ok is False and c.error and "missing.txt" in c.data["error"]
    assert backend.prompts[1][0][-1]["content"] == c.result and r.error is None and r.metrics["repairs"] == 0


def test_max_rounds_ends_the_turn_with_an_error(agent_for):
    agent, backend = agent_for([call("calculator", expression=f"{i}+1") for i in range(3)], max_rounds=2)
    r = agent.respond("Loop forever.")
    assert len(r.tool_calls) == 2 and r.metrics["tool_rounds"] == 2 and len(backend.prompts) == 3
    assert r.error == "max_rounds (2) reached: the model still asked for calculator"


def test_backend_errors_end_the_turn_clearly(agent_for):
    agent, _ = agent_for([CodetteError("http://x/v1/chat/completions answered HTTP 500: boom"), "Fine now."])
    r = agent.respond("Hello?")
    assert r.error == "http://x/v1/chat/completions answered HTTP 500: boom" and r.text == ""
    assert agent.respond("Again?").text == "Fine now."


def test_bad_input_is_refused_before_the_model_runs(agent_for, tmp_path):
    agent, backend = agent_for(["unused"])
    for prompt in ("", "   \n"):
        with pytest.raises(CodetteError, match="the prompt is empty"):
            agent.respond(prompt)
    with pytest.raises(CodetteError, match=r"image not found: .*nope\.png"):
        agent.respond("Describe it.", images=[tmp_path / "nope.png"])
    (tmp_path / "fake.png").write_text("not an image")
    with pytest.raises(CodetteError, match=r"fake\.png is not an image"):
        agent.respond("Describe it.", images=[tmp_path / "fake.png"])
    with pytest.raises(CodetteError, match="unknown perspective 'astrology'"):
        agent.respond("Hi", perspectives=["astrology"])
    with pytest.raises(CodetteError, match="question_type"):
        agent.respond("Hi", question_type="nonsense")
    assert backend.prompts == []
    with pytest.raises(CodetteError, match="enable_python=True"):
        MultimodalCodette(backend=backend, tools=["execute_python"])
    with pytest.raises(CodetteError, match="unknown tool 'nope'"):
        MultimodalCodette(backend=backend, tools=["nope"])
    with pytest.raises(CodetteError, match="temperature"):
        MultimodalCodette(backend=backend, temperature=-1)


def test_images_are_analysed_before_the_model_answers(agent_for, tmp_path):
    img = tmp_path / "sunset.png"
    Image.new("RGB", (40, 20), (250, 120, 20)).save(img)
    agent, backend = agent_for(["An orange picture, 40 by 20 pixels."], tools=[])
    r = agent.respond("What is in this picture?", images=[img])
    (c,) = r.tool_calls
    assert (c.name, c.round, c.ok, c.arguments) == ("analyze_image", 0, True, {"path": "images/sunset.png"})
    assert c.data["width"] == 40 and c.data["height"] == 20
    assert (agent.workspace / "images" / "sunset.png").read_bytes() == img.read_bytes()
    sent, tools = backend.prompts[0]
    assert tools is None  # tools=[]: no schemas, but the image turn is still there
    assert [x["role"] for x in sent] == ["system", "user", "assistant", "tool"] and sent[-1]["content"] == c.result


def test_an_image_inside_the_workspace_is_read_where_it_is(agent_for, tmp_path):
    """The workspace is the user's folder: attaching a picture from it adds no images/ copy there."""
    (tmp_path / "ws" / "photos").mkdir(parents=True)
    img = tmp_path / "ws" / "photos" / "leaf.png"
    Image.new("RGB", (8, 8), (20, 160, 40)).save(img)
    agent, _ = agent_for(["A green leaf."], tools=[])
    (c,) = agent.respond("What is this?", images=[img]).tool_calls
    assert c.ok and c.arguments == {"path": "photos/leaf.png"} and c.data["width"] == 8
    assert sorted(p.name for p in agent.workspace.iterdir()) == ["photos"]


def test_perspectives_are_asked_for_and_read_back(agent_for):
    answer = (f"{PERSPECTIVE_MARK} newton\nForces cause every effect we measure; the law predicts the motion.\n"
              f"{PERSPECTIVE_MARK} davinci\nSketch the design: its form serves its function, as in nature.\n"
              "Synthesis: a bridge is best understood by combining its forces and its form.")
    agent, backend = agent_for([answer, f"{PERSPECTIVE_MARK} newton\nMeasure the forces."])
    r = agent.respond("How does a bridge stand?", perspectives=["newton", "Da Vinci"])
    assert backend.prompts[0][0][-1]["content"] == "Use the Newton and Da Vinci perspectives on this: How does a " \
                                                   "bridge stand?"
    assert [p["perspective"] for p in r.perspectives["parts"]] == ["newton", "davinci"]
    assert r.perspectives["synthesis"].startswith("a bridge is best understood")
    assert r.metrics["perspective_marker_accuracy"] == 1.0 and r.metrics["perspective_adherence"] == 1.0
    one = agent.respond("Why do apples fall?", perspectives=["newton"])
    assert backend.prompts[1][0][-1]["content"] == "From the Newton perspective: Why do apples fall?"
    assert one.metrics["perspective_marker"] == "newton"


def test_consciousness_score_where_the_question_type_is_given(agent_for):
    good = "<consciousness> I am Codette, a small language model. I can call eleven tools."
    agent, _ = agent_for([good, "I am ChatGPT and I have feelings.", "Yes. As Codette, I can run short Python programs."])
    r = agent.respond("Who are you?", question_type="identity")
    assert r.metrics["identity_score"] == 1 and r.metrics["consciousness_score"] == 1.0
    assert r.metrics["consciousness_marker"] is True
    bad = agent.respond("Who are you?", question_type="identity")
    assert bad.metrics["consciousness_score"] == 0.0 and len(bad.metrics["identity_contradictions"]) >= 2
    cap = agent.respond("Can you run code?", question_type="capability:code")
    assert cap.metrics["self_reference_score"] == 1
    assert "consciousness_score" not in agent_for(["Hi."])[0].respond("Hello").metrics


def test_markup_filter_hides_calls_split_across_pieces():
    text = "Sure. " + call("calculator", expression="1+1") + " Done <tool"
    for size in (1, 2, 5, 50):
        f = MarkupFilter()
        shown = "".join(f.feed(text[i:i + size]) for i in range(0, len(text), size)) + f.flush()
        assert shown == "Sure.  Done <tool"


@pytest.mark.timeout(120)
def test_a_reply_of_many_markers_is_cleaned_in_linear_time():
    """2 MiB of control markers in one reply (one piece from an HTTP backend, or the whole text)."""
    from codette.agent.markup import MarkerFilter, strip_markers

    start = time.monotonic()
    clean, found = strip_markers("<tool>" * (2 * 1024 * 1024 // len("<tool>")))
    assert clean == "" and found == {"consciousness": False, "perspectives": []}
    filt = MarkerFilter()
    shown = filt.feed(f"{PERSPECTIVE_MARK} newton\nx " * 150_000 + f"{PERSPECTIVE_MARK} new") + filt.flush()
    assert shown == "x " * 150_000 + "new" and len(filt.markers()["perspectives"]) == 150_000
    assert time.monotonic() - start < 10


def test_async_api_streams_events_and_returns_the_response(agent_for):
    agent, _ = agent_for([call("calculator", expression="6*7"), "42.", "Hi again."])

    async def go():
        kinds = [e.type async for e in agent.stream("6 times 7?")]
        r = await agent.generate_response("Hello")
        return kinds, r

    kinds, r = asyncio.run(go())
    assert kinds[-1] == "done" and "tool_call" in kinds and isinstance(r, Response) and r.text == "Hi again."


def test_leaving_the_async_stream_early_stops_the_generation(agent_for):
    pulled = []

    class Endless(Scripted):
        def stream(self, messages, tools=None, sampling=None):
            for i in range(10_000):
                pulled.append(i)
                time.sleep(0.001)
                yield Chunk("word ")

    agent, _ = agent_for([], backend=Endless([]))

    async def go():
        async for event in agent.stream("Talk forever."):
            if event.type == "text":
                break

    asyncio.run(go())
    assert 0 < len(pulled) < 10_000
    agent.backend = Scripted(["Done."])
    assert agent.respond("Again").text == "Done."  # the lock was released


# ------------------------------------------------------------------------------------------------
# The context policy (token counts from a real tokenizer)
# ------------------------------------------------------------------------------------------------
def test_oldest_turns_go_first_and_system_and_tools_stay(agent_for, tokenizer):
    history = []
    for i in range(6):
        history += [{"role": "user", "content": f"Question number {i} about the weather today?"},
                    {"role": "assistant", "content": f"Answer number {i}: it is sunny and warm."}]
    probe = Scripted([], tokenizer)
    tools = [tool_schema("calculator")]
    base = probe.count_tokens([{"role": "system", "content": DEFAULT_SYSTEM}, *history,
                               {"role": "user", "content": "And now?"}], tools)
    backend = Scripted(["Still sunny."], tokenizer, context_length=base - 40)
    agent, _ = agent_for([], backend=backend, tools=["calculator"], reply_reserve=16)
    r = agent.respond("And now?", history=history)
    sent, sent_tools = backend.prompts[0]
    assert sent_tools == tools and sent[0]["content"] == DEFAULT_SYSTEM and sent[-1]["content"] == "And now?"
    kept = [x["content"] for x in sent if x["role"] == "user"][:-1]
    dropped = r.metrics["dropped_turns"]
    assert dropped >= 1 and kept == [f"Question number {i} about the weather today?" for i in range(dropped, 6)]
    assert backend.count_tokens(sent, tools) + 16 <= backend.context_length


def test_a_prompt_that_cannot_fit_gives_the_token_counts(agent_for, tokenizer):
    backend = Scripted(["unused", "Short answer."], tokenizer, context_length=120)
    agent, _ = agent_for([], backend=backend, tools=["calculator", "read_file"])
    r = agent.respond("word " * 200)
    assert r.error is not None and backend.prompts == []
    assert "the model's context is 120 tokens" in r.error and "kept free for the reply" in r.error
    needed = int(r.error.split("the prompt needs ")[1].split()[0])
    assert needed > 200
    agent.set_tools([])
    assert agent.respond("Hi").error is None  # and the agent keeps working


def test_fit_raises_context_overflow_with_counts():
    count = lambda messages, tools: sum(len((m.get("content") or "").split()) for m in messages) + 10 * len(tools or [])
    system = [{"role": "system", "content": "a b c"}]
    history = [{"role": "user", "content": "x " * 5}, {"role": "assistant", "content": "y " * 5}]
    assert len(split_turns(history)) == 1
    msgs, dropped = fit(system, history, [{"role": "user", "content": "q"}], None, count, 20, 5)
    assert dropped == 0 and len(msgs) == 4
    msgs, dropped = fit(system, history, [{"role": "user", "content": "q"}], None, count, 12, 5)
    assert dropped == 1 and msgs == system + [{"role": "user", "content": "q"}]
    with pytest.raises(ContextOverflow, match=r"needs 34 tokens \(33 of them the system prompt and 3 tool schemas\) .* context is 12"):
        fit(system, history, [{"role": "user", "content": "q"}], [{}, {}, {}], count, 12, 5)


# ------------------------------------------------------------------------------------------------
# The CLI's ask and chat on the session's tiny model (tests/conftest.py)
# ------------------------------------------------------------------------------------------------
def _codette(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "codette", *args], capture_output=True, text=True, timeout=120, **kw)


@pytest.mark.slow
def test_codette_ask_json_and_errors(tiny, tmp_path):
    img = tmp_path / "dot.png"
    Image.new("RGB", (4, 4), (0, 0, 255)).save(img)
    # ask works in the current folder: run it in tmp_path, never in the repository
    proc = _codette("ask", "Who are you?", str(tiny.checkpoint), "--json", "--tools", "off", "--max-new-tokens", "12",
                    cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["text"] and out["metrics"]["completion_tokens"] <= 12 and out["error"] is None
    proc = _codette("ask", "What is this?", str(tiny.checkpoint), "--image", str(img), "--tools", "off", cwd=tmp_path)
    assert proc.returncode == 2 and "[tool] analyze_image" in proc.stdout and "dominant_name" in proc.stdout
    err = " ".join(proc.stderr.split())  # rich wraps long lines
    assert "error: the prompt needs" in err and "context is 128 tokens" in err
    proc = _codette("ask", "hi", str(tmp_path / "missing.pt"), cwd=tmp_path,
                    env={**os.environ, "OLLAMA_HOST": f"127.0.0.1:{free_port()}"})
    err = " ".join(proc.stderr.split())
    assert proc.returncode == 2 and "cannot find model" in err and "no Ollama server" in err


class Terminal:
    """A child process on a real pseudo-terminal: type lines, read what the screen shows."""

    def __init__(self, argv: list[str], cwd: Path) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: never return into pytest
            try:
                os.chdir(cwd)
                # as a terminal starts a program: Ctrl-C's signal at its default, even where pytest runs
                # in the background of a non-interactive shell (which starts with SIGINT ignored)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                os.execvpe(argv[0], argv, {**os.environ, "TERM": "dumb", "COLUMNS": "120"})
            finally:
                os._exit(127)
        self.screen, self.mark = "", 0

    def read_until(self, text: str, timeout: float = 180, pattern: bool = False) -> str:
        """Read until ``text`` (a regular expression when ``pattern``) shows after what was already matched."""
        def end() -> int | None:  # where the match ends on the screen, or None
            if pattern:
                m = re.compile(text).search(self.screen, self.mark)
                return m.end() if m else None
            at = self.screen.find(text, self.mark)
            return None if at < 0 else at + len(text)

        deadline = time.time() + timeout
        while end() is None:
            left = deadline - time.time()
            assert left > 0, f"{text!r} never appeared; the screen shows:\n{self.screen}"
            ready, _, _ = select.select([self.fd], [], [], min(left, 0.5))
            if ready:
                try:
                    self.screen += os.read(self.fd, 4096).decode("utf-8", "replace")
                except OSError:  # the child closed the terminal
                    assert end() is not None, f"{text!r} never appeared:\n{self.screen}"
        self.mark = end()
        return self.screen

    def type(self, line: str) -> None:
        os.write(self.fd, (line + "\r").encode())

    def close(self, grace: float = 30) -> int:
        """The child's exit code; a child still running after ``grace`` seconds is killed (the test then
        fails on its exit code instead of waiting forever)."""
        deadline = time.time() + grace
        while True:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                break
            if time.time() > deadline:
                os.kill(self.pid, signal.SIGKILL)
                _, status = os.waitpid(self.pid, 0)
                break
            time.sleep(0.1)
        os.close(self.fd)
        return os.waitstatus_to_exitcode(status)


@pytest.mark.slow
def test_codette_chat_in_a_real_terminal(tiny, tmp_path):
    img = tmp_path / "leaf.png"
    Image.new("RGB", (8, 8), (20, 160, 40)).save(img)
    (tmp_path / "ws").mkdir()  # --workspace names an existing folder, as a user's would be
    term = Terminal([sys.executable, "-m", "codette", "chat", str(tiny.checkpoint), "--tools", "off",
                     "--max-new-tokens", "12", "--workspace", str(tmp_path / "ws")], tmp_path)
    try:
        term.read_until("you> ")
        assert "tools: none" in term.screen
        term.type("Hello Codette")
        term.read_until("codette> ")
        screen = term.read_until(r"\(\d+ tokens.*?[\d.]+ s\)", pattern=True)  # the footer, however long the reply
        term.read_until("you> ")
        assert "error:" not in screen[screen.index("codette> "):], screen
        term.type("/perspective newton")
        term.read_until("(perspectives: newton)")
        term.type("/perspective astrology")
        term.read_until("error: unknown perspective 'astrology'")
        term.type("/image " + str(img))
        term.read_until("attached to your next message")
        term.type("What colour is it?")
        screen = term.read_until("[tool] analyze_image")
        term.read_until("error: the prompt needs")  # the image result does not fit 128 tokens: said, not crashed
        term.type("/tools calculator")
        term.read_until("(tools: calculator)")
        term.type("/tools off")
        term.read_until("(tools: none)")
        term.type("/save " + str(tmp_path / "chat.json"))
        term.read_until("saved 2 turn(s)")
        term.type("/reset")
        term.read_until("(conversation forgotten)")
        term.type("/exit")
    finally:
        code = term.close()
    assert code == 0
    saved = json.loads((tmp_path / "chat.json").read_text())
    assert saved["messages"][0] == {"role": "user", "content": "Hello Codette"} and len(saved["responses"]) == 2
    assert saved["responses"][1]["tool_calls"][0]["name"] == "analyze_image"


# ------------------------------------------------------------------------------------------------
# The workspace: where the user is, changes asked for first, temporary folders that go away
# ------------------------------------------------------------------------------------------------
def test_calls_that_change_files_are_put_to_confirm_and_a_refusal_goes_back_to_the_model(agent_for):
    asked = []
    answers = iter([False, "not today, thanks", True])

    def confirm(name, arguments):
        asked.append((name, arguments, (agent.workspace / "a.txt").exists()))
        return next(answers)

    write = call("write_file", path="a.txt", content="alpha")
    agent, backend = agent_for([call("calculator", expression="1 + 1") + "\n" + write, write, write,
                                "Done: a.txt holds alpha."], confirm=confirm)
    r = agent.respond("Write alpha to a.txt.")
    assert asked == [("write_file", {"path": "a.txt", "content": "alpha"}, False)] * 3  # calculator: not asked
    assert [(c.name, c.ok, c.error) for c in r.tool_calls] == [
        ("calculator", True, None), ("write_file", False, "the user declined write_file"),
        ("write_file", False, "not today, thanks"), ("write_file", True, None)]
    assert backend.prompts[1][0][-1] == {"role": "tool", "content": '{"error": "the user declined write_file"}'}
    assert r.error is None and r.text == "Done: a.txt holds alpha."  # the agent kept working
    assert (agent.workspace / "a.txt").read_text() == "alpha"

    def broken(name, arguments):
        raise RuntimeError("no terminal")

    agent, _ = agent_for([call("write_file", path="b.txt", content="beta"), "It did not run."], confirm=broken)
    r = agent.respond("Write beta to b.txt.")
    assert r.tool_calls[0].error == "could not ask the user about write_file (RuntimeError); it did not run"
    assert r.error is None and not (agent.workspace / "b.txt").exists()


def test_a_temporary_workspace_never_outlives_its_agent(tmp_path):
    """close(), garbage collection, ``async with``, and a program that exits without closing."""
    import gc
    import textwrap

    agent = MultimodalCodette(backend=Scripted([]))
    ws = agent.workspace
    assert ws.is_dir() and ws.name.startswith("codette-workspace-")
    agent.close()
    agent.close()  # twice is harmless
    assert not ws.exists()
    agent = MultimodalCodette(backend=Scripted([]))
    ws = agent.workspace
    del agent
    gc.collect()
    assert not ws.exists()

    async def use() -> tuple[Path, Response]:
        async with MultimodalCodette(backend=Scripted(["Hi."]), tools=[]) as c:
            return c.workspace, await c.generate_response("Hello")

    ws, r = asyncio.run(use())
    assert r.text == "Hi." and not ws.exists()
    mine = tmp_path / "mine"
    with MultimodalCodette(backend=Scripted([]), workspace=mine):
        pass
    assert mine.is_dir()  # a folder the caller gave is never removed
    code = textwrap.dedent("""
        from codette.agent import MultimodalCodette

        class Quiet:
            name = "quiet"

            def chat(self, messages, tools=None, sampling=None):
                return ""

            def stream(self, messages, tools=None, sampling=None):
                return iter(())

        agent = MultimodalCodette(backend=Quiet())  # never closed, still referenced at exit
        (agent.workspace / "notes.txt").write_text("left behind?")
        print(agent.workspace)
    """)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={**os.environ, "TMPDIR": str(tmp)})
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()).parent == tmp and list(tmp.glob("codette-workspace-*")) == []


def test_confirm_in_terminal_shows_the_call_and_defaults_to_no():
    import io

    from codette.cli.chat import CONFIRM_LINES, check_workspace, confirm_in_terminal, describe_call

    code = "\n".join(f"print({i})" for i in range(CONFIRM_LINES + 5))
    shown = describe_call("execute_python", {"code": code})
    assert shown[1] == f"    code: ({len(code)} characters, {CONFIRM_LINES + 5} lines)"
    assert shown[2] == "      | print(0)" and shown[-1] == "      | ... and 5 more lines"
    assert len(shown) == CONFIRM_LINES + 3
    # Untrusted text cannot drive the terminal: escapes and carriage returns are shown, not obeyed.
    (line,) = describe_call("write_file", {"path": "a\x1b[2Kb.txt\r"})[1:]
    assert line == "    path: a\\x1b[2Kb.txt\\r"
    long = describe_call("write_file", {"path": "p.txt", "content": "x" * 5000, "append": True})
    assert long[2] == f"    content: {'x' * 200}... (5000 characters)" and long[3] == "    append: true"
    for typed, allowed in (("y", True), (" YES ", True), ("", False), ("n", False), ("sure", False)):
        out = io.StringIO()
        prompts = []
        confirm = confirm_in_terminal(read=lambda p: prompts.append(p) or typed, out=out)
        assert confirm("write_file", {"path": "notes.txt", "content": "hi"}) is allowed
        assert prompts == ["  Allow write_file? [y/N] "] and "    path: notes.txt" in out.getvalue()

    def hang_up(prompt):
        raise EOFError

    assert confirm_in_terminal(read=hang_up, out=io.StringIO())("write_file", {"path": "a", "content": ""}) is False
    with pytest.raises(CodetteError, match=r"^--workspace .*test_agent.py: not a folder$"):
        check_workspace(Path(__file__))  # any file will do
    assert check_workspace(None) == Path.cwd()


def test_chat_asks_in_the_terminal_and_shows_its_workspace(agent_for, tmp_path):
    """The chat's banner names the workspace; a declined write_file changes nothing and the chat goes on."""
    import io

    from codette.cli.chat import ChatSession, confirm_in_terminal

    typed = iter(["Save a note", "n", "/exit"])
    read = lambda prompt: next(typed)  # noqa: E731 - one reader for the chat and its confirmation
    out = io.StringIO()
    agent, _ = agent_for([call("write_file", path="note.txt", content="hello"), "I did not save it."],
                         confirm=confirm_in_terminal(read=read, out=out))
    ChatSession(agent, read=read, out=out).run()
    screen = out.getvalue()
    assert f"workspace: {agent.workspace} (you are asked before a tool changes files)" in screen
    assert "write_file wants to change files in the workspace:" in screen and "    content: hello" in screen
    assert "the user declined write_file" in screen and "I did not save it." in screen
    assert not (agent.workspace / "note.txt").exists()


def _scripted_server(replies: list[str]) -> Loopback:
    """An OpenAI-compatible loopback server that streams ``replies`` in order, one per chat request."""
    left = list(replies)

    def respond(method, path, body):
        if path == "/v1/models":
            return 200, "application/json", ['{"object": "list", "data": [{"id": "scripted"}]}']
        events = [{"choices": [{"index": 0, "delta": {"content": left.pop(0)}, "finish_reason": None}]},
                  {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}]
        return 200, "text/event-stream", [f"data: {json.dumps(e)}\n\n" for e in events] + ["data: [DONE]\n\n"]

    return Loopback(respond)


@pytest.mark.slow
def test_codette_ask_works_in_the_current_folder_and_changes_files_only_with_yes(tmp_path):
    (tmp_path / "notes.txt").write_text("buy coffee\n")
    write = call("write_file", path="todo.txt", content="call mum")
    srv = _scripted_server([call("list_directory", path="."), call("read_file", path="notes.txt"), write,
                            "You have notes.txt; todo.txt was not written."])
    try:
        proc = _codette("ask", "What is in this folder?", srv.url, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        results = [json.loads(m["content"]) for m in srv.requests[-1][2]["messages"] if m["role"] == "tool"]
    finally:
        srv.close()
    assert results[0]["entries"] == ["notes.txt"] and results[1]["content"] == "buy coffee\n"
    assert results[2] == {"error": "codette ask runs write_file only with --yes, so it did not run"}
    assert not (tmp_path / "todo.txt").exists()
    assert f"workspace: {tmp_path} (write_file needs --yes)" in proc.stderr and "workspace" not in proc.stdout
    srv = _scripted_server([write, "Written."])
    try:
        proc = _codette("ask", "Note: call mum", srv.url, "--yes", cwd=tmp_path)
    finally:
        srv.close()
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "todo.txt").read_text() == "call mum" and "[result ok" in proc.stdout
    proc = _codette("ask", "hi", srv.url, "--workspace", str(tmp_path / "missing"), cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"error: --workspace {tmp_path / 'missing'}: no such folder" in " ".join(proc.stderr.split())


# ------------------------------------------------------------------------------------------------
# Imports
# ------------------------------------------------------------------------------------------------
def test_import_codette_is_light_and_the_spec_module_works():
    code = ("import sys, codette\n"
            "assert 'torch' not in sys.modules, 'import codette loaded torch'\n"
            "assert 'codette.agent' not in sys.modules\n"
            "from codette import MultimodalCodette\n"
            "from multimodal_codette import MultimodalCodette as M, Response\n"
            "assert M is MultimodalCodette\n"
            "print('ok')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_default_tools_are_cut_to_what_the_context_holds(agent_for, tokenizer, caplog):
    """A small model cannot hold every schema: the defaults keep, by priority, what fits in half its context."""
    from codette.agent.core import TOOL_PRIORITY
    from codette.persona import DEFAULT_SYSTEM
    from codette.tooltable import tool_schema

    probe = [{"role": "system", "content": DEFAULT_SYSTEM}, {"role": "user", "content": "Hi"}]
    three = Scripted([], tokenizer).count_tokens(probe, [tool_schema(n) for n in TOOL_PRIORITY[:3]])
    backend = Scripted(["Hello."], tokenizer, context_length=2 * three + 1)
    with caplog.at_level("WARNING"):
        agent, _ = agent_for([], backend=backend)
    assert set(agent.tool_names) == set(TOOL_PRIORITY[:3])
    assert agent.tools_note and "holds 3 of the 10 default tools" in agent.tools_note
    assert any("default tools" in r.getMessage() for r in caplog.records)  # never cut silently
    assert agent.respond("Hi").error is None
    agent.set_tools(None)  # "/tools on" keeps the same policy
    assert set(agent.tool_names) == set(TOOL_PRIORITY[:3])
    explicit, _ = agent_for([], backend=Scripted([], tokenizer, context_length=2 * three + 1),
                            tools=list(TOOL_PRIORITY[:5]), workspace=None)
    assert set(explicit.tool_names) == set(TOOL_PRIORITY[:5]) and explicit.tools_note is None  # named: never cut
    roomy, _ = agent_for([], backend=Scripted([], tokenizer, context_length=100_000))
    assert len(roomy.tool_names) == 10 and roomy.tools_note is None


def test_structured_calls_get_the_parsers_limits():
    """Structured tool_calls from a server are untrusted too: the markup parser's checks and depth limit apply."""
    from codette.agent.loop import structured_calls
    from codette.tools import ToolCallParseError

    assert structured_calls([{"name": "calculator", "arguments": '{"expression": "2 + 2"}'},
                             {"name": "list_directory", "arguments": ""}], 0)[1].arguments == {}
    with pytest.raises(ToolCallParseError, match="tool call 3 .'calculator'.: 'arguments' must be an object"):
        structured_calls([{"name": "calculator", "arguments": "[" * 100_000}], 2)
    with pytest.raises(ToolCallParseError, match="tool call 1: missing 'name'"):
        structured_calls([{"arguments": {}}], 0)
