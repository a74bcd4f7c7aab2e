"""`codette chat` as `ollama run` users expect it: Ctrl-C stops a reply and keeps the session, readline
editing and history, \"\"\" messages, /clear, /set system, /perspective, /?, and no control markers on screen.

The in-process tests drive :class:`ChatSession` with a scripted backend (Ctrl-C is a real SIGINT sent
to this process); the terminal test runs `codette chat` on a pseudo-terminal against a loopback
OpenAI-compatible server that streams slowly, so nothing is trained.
"""

from __future__ import annotations

import io
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from codette.backends.base import Chunk
from codette.cli.chat import ChatSession
from codette.cli.terminal import LineEditor, read_message
from codette.errors import CodetteError
from tests._loopback import Loopback
from tests.test_agent import Scripted, Terminal, agent_for, call  # noqa: F401 - agent_for is a fixture
from tests.test_constraints import untrained  # noqa: F401 - a fixture

ROOT = Path(__file__).resolve().parents[1]


def session(agent_for, replies, typed: list[str], backend=None, **kwargs) -> tuple[str, object, ChatSession]:
    """Run a chat on ``typed`` lines (an exception in the list is raised by the reader); return the screen."""
    agent, backend = agent_for(replies, backend=backend, tools=[])
    lines = iter(typed)

    def read(prompt: str) -> str:
        item = next(lines)
        if isinstance(item, BaseException):
            raise item
        return item

    out = io.StringIO()
    chat = ChatSession(agent, read=read, out=out, **kwargs)
    chat.run()
    return out.getvalue(), backend, chat


def test_read_message_takes_one_line_or_the_lines_between_triple_quotes():
    def reader(lines):
        it = iter(lines)
        return lambda prompt: next(it)

    held: list[str] = []
    assert read_message(reader(["hello"]), "you> ", "...> ", held) == ("hello", False)
    assert read_message(reader(['"""one line"""']), "you> ", "...> ", held) == ("one line", True)
    assert read_message(reader(['"""', "line one", 'line two"""']), "you> ", "...> ", held) == \
        ("\nline one\nline two", True)
    assert read_message(reader(['"""first', "/not a command", '"""']), "you> ", "...> ", held) == \
        ("first\n/not a command\n", True)
    assert read_message(reader(['/set system """You are', 'terse."""']), "you> ", "...> ", held) == \
        ("/set system You are\nterse.", False)
    prompts: list[str] = []

    def interrupted(prompt: str) -> str:
        prompts.append(prompt)
        if len(prompts) == 3:
            raise KeyboardInterrupt
        return ['"""', "half a message"][len(prompts) - 1]

    with pytest.raises(KeyboardInterrupt):
        read_message(interrupted, "you> ", "...> ", held)
    assert prompts == ["you> ", "...> ", "...> "] and held == ["", "half a message"]  # the caller sees it was typing


def test_chat_commands_multiline_messages_and_hidden_markers(agent_for):
    screen, backend, chat = session(
        agent_for, ["<consciousness> I am Codette.", "<perspective> newton\nForces cause motion.", "Short.",
                    "Fresh start."],
        ["/?", "/perspective", "Who are you?", '"""', "Why do", 'apples fall?"""', '/set system "Be brief."',
         "/set system", "Again", "/clear", '"""/save is just text"""', "/bye"])
    assert "/set system \"TEXT\"" in screen and "/clear" in screen  # /? lists the commands
    assert "  newton              Newton" in screen and "(asked for now: none" in screen  # bare /perspective
    assert "codette> I am Codette." in screen and "codette> Forces cause motion." in screen
    assert "<consciousness>" not in screen and "<perspective>" not in screen
    assert backend.prompts[1][0][-1] == {"role": "user", "content": "Why do\napples fall?"}
    # The history keeps the model's own text: it goes back to the model.
    assert backend.prompts[1][0][2] == {"role": "assistant", "content": "<consciousness> I am Codette."}
    assert "(system prompt: Be brief.)" in screen
    assert backend.prompts[2][0][0] == {"role": "system", "content": "Be brief."}
    # /clear forgets the conversation; a quoted message starting with / is a message, not a command.
    assert backend.prompts[3][0] == [{"role": "system", "content": "Be brief."},
                                     {"role": "user", "content": "/save is just text"}]
    assert [r["text"] for r in chat.responses] == ["Fresh start."]


def test_raw_shows_the_markers(agent_for):
    screen, _, chat = session(agent_for, ["<consciousness> I am Codette."], ["Who are you?", "/exit"], raw=True)
    assert "codette> <consciousness> I am Codette." in screen
    assert chat.responses[0]["text"] == "<consciousness> I am Codette."


def test_ask_and_chat_hide_the_markers_unless_raw(agent_for, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import codette.cli.chat as chat
    from codette.cli.main import app
    from tests.test_agent import _scripted_server

    agent, _ = agent_for(["<consciousness> I am Codette."] * 3, tools=[])
    shown = {}
    for raw, json_out in ((False, False), (True, False), (False, True)):
        out = io.StringIO()
        chat.run_ask(agent, "Who are you?", json_out, [], [], out=out, err=io.StringIO(), raw=raw)
        shown[raw, json_out] = out.getvalue()
    assert shown[False, False] == "I am Codette.\n" and shown[True, False] == "<consciousness> I am Codette.\n"
    response = json.loads(shown[False, True])
    assert response["text"] == "I am Codette." and response["markers"]["consciousness"] is True
    asked = []  # the flag reaches both verbs

    class Session:
        def __init__(self, agent, **kwargs):
            asked.append(kwargs)

        def run(self):
            pass

    monkeypatch.setattr(chat, "run_ask", lambda *args, **kwargs: asked.append(kwargs))
    monkeypatch.setattr(chat, "ChatSession", Session)
    srv = _scripted_server([])
    try:
        for verb in (["ask", "hi"], ["chat"]):
            for flags in ([], ["--raw"]):
                result = CliRunner().invoke(app, [*verb, srv.url, "--workspace", str(tmp_path), *flags])
                assert result.exit_code == 0, result.output
    finally:
        srv.close()
    assert [kwargs["raw"] for kwargs in asked] == [False, True, False, True]


class Interrupted(Scripted):
    """Streams a story one word at a time; the user presses Ctrl-C (a real SIGINT) while the fourth word
    is generated, or, with ``stuck``, the backend then hangs and the user presses Ctrl-C again."""

    def __init__(self, replies, stuck: bool = False) -> None:
        super().__init__(replies)
        self.stuck = stuck
        self.words = 0
        self.closed = False

    def stream(self, messages, tools=None, sampling=None):
        if "story" not in messages[-1]["content"]:
            yield from super().stream(messages, tools, sampling)
            return
        self.prompts.append((json.loads(json.dumps(messages)), tools))
        try:
            for i in range(1000):
                if i == 3:
                    os.kill(os.getpid(), signal.SIGINT)
                    if self.stuck:  # the second Ctrl-C interrupts the hang at once
                        threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)).start()
                        time.sleep(60)
                self.words += 1
                yield Chunk(f"word{i} ")
        finally:
            self.closed = True


@pytest.mark.parametrize("stuck", [False, True])
def test_ctrl_c_stops_the_reply_and_keeps_the_session(agent_for, stuck):
    backend = Interrupted(["First answer.", "Second answer."], stuck=stuck)
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN where pytest runs in a shell's background
    started = time.monotonic()
    screen, _, chat = session(agent_for, [], ["Hello", "Tell me a long story", "And then?", "/exit"],
                              backend=backend)
    assert time.monotonic() - started < 30  # a stuck backend (a 60 s hang) does not hold the chat
    # The generation stopped at the token where Ctrl-C came (or in the hang), and was closed.
    assert backend.closed and backend.words == (3 if stuck else 4)
    assert "word2" in screen and "word3" not in screen
    assert "(interrupted: this turn is left out of the conversation)" in screen
    assert "codette> Second answer." in screen and signal.getsignal(signal.SIGINT) is before  # handler restored
    # The interrupted turn is not in the history; the one before it is.
    assert backend.prompts[-1][0][1:] == [{"role": "user", "content": "Hello"},
                                          {"role": "assistant", "content": "First answer."},
                                          {"role": "user", "content": "And then?"}]
    assert [r["text"] for r in chat.responses] == ["First answer.", "Second answer."]


def test_ctrl_c_at_a_tools_question_declines_it_and_stops_the_turn(agent_for):
    from codette.cli.chat import confirm_in_terminal

    def waits_for_ctrl_c(prompt: str) -> str:  # the y/N question; the user presses Ctrl-C instead of answering
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(60)
        return "y"

    typed = iter(["Save a note", "Hello", "/exit"])
    out = io.StringIO()
    agent, backend = agent_for([call("write_file", path="note.txt", content="hi"), "Hi there."],
                               confirm=confirm_in_terminal(read=waits_for_ctrl_c, out=out))
    started = time.monotonic()
    ChatSession(agent, read=lambda prompt: next(typed), out=out).run()
    assert time.monotonic() - started < 30  # one Ctrl-C: the question did not wait its 60 s for an answer
    screen = out.getvalue()
    assert "the user declined write_file" in screen and "(interrupted: this turn is left out" in screen
    assert not (agent.workspace / "note.txt").exists() and "codette> Hi there." in screen
    assert len(backend.prompts) == 2 and len(backend.prompts[1][0]) == 2  # system + "Hello": turn dropped


def test_ctrl_c_at_the_prompt_warns_once_and_twice_leaves(agent_for):
    screen, backend, _ = session(agent_for, ["Hi."], [KeyboardInterrupt(), "Hello", KeyboardInterrupt(),
                                                      KeyboardInterrupt(), "never read"])
    assert screen.count("(Ctrl-C again, Ctrl-D or /exit to leave)") == 2  # a message in between starts afresh
    assert len(backend.prompts) == 1


def test_line_editor_keeps_the_history_in_a_private_file(tmp_path, monkeypatch):
    readline = pytest.importorskip("readline")
    path = tmp_path / "home" / ".codette" / "chat_history"
    path.parent.parent.mkdir()
    readline.clear_history()
    editor = LineEditor(path)
    editor.load()
    typed = iter(["first", "first", "  ", "second"])
    monkeypatch.setattr("builtins.input", lambda prompt: next(typed))
    assert [editor.read("you> ") for _ in range(4)] == ["first", "first", "  ", "second"]
    editor.save()
    assert path.read_text() == "first\nsecond\n"  # no blank lines, no repeats in a row
    assert os.stat(path.parent).st_mode & 0o077 == 0
    readline.clear_history()
    LineEditor(path).load()
    assert [readline.get_history_item(i) for i in (1, 2)] == ["first", "second"]
    readline.clear_history()
    readline.set_auto_history(True)


def _slow_server() -> tuple[Loopback, list[int]]:
    """An OpenAI-compatible loopback server: a story streams a word every 50 ms until the client goes;
    anything else is answered at once, with a <consciousness> marker split across three events."""
    sent: list[int] = []

    def events(pieces):
        for piece in pieces:
            yield f"data: {json.dumps({'choices': [{'index': 0, 'delta': {'content': piece}}]})}\n\n"
        yield "data: [DONE]\n\n"

    def story():
        for i in range(2000):
            time.sleep(0.05)
            sent.append(i)
            yield f"word{i} "

    def respond(method, path, body):
        if path == "/v1/models":
            return 200, "application/json", ['{"object": "list", "data": [{"id": "slow"}]}']
        asked = body["messages"][-1]["content"]
        pieces = story() if "story" in asked else ["<consci", "ousness>", f" Answer to: {asked}"]
        return 200, "text/event-stream", events(pieces)

    return Loopback(respond), sent


@pytest.mark.slow
def test_codette_chat_ctrl_c_arrow_keys_and_history_in_a_real_terminal(tmp_path):
    srv, sent = _slow_server()
    (tmp_path / "ws").mkdir()
    term = Terminal(["env", "-u", "CODETTE_HISTORY", f"HOME={tmp_path}", sys.executable, "-m", "codette", "chat",
                     srv.url, "--tools", "off", "--workspace", str(tmp_path / "ws")], ROOT)
    try:
        term.read_until("you> ")
        term.type("first question")
        term.read_until("Answer to: first question")
        term.read_until("you> ")
        term.type("tell me a long story")
        term.read_until("word3 ")
        os.write(term.fd, b"\x03")  # Ctrl-C
        term.read_until("(interrupted: this turn is left out of the conversation)")
        term.read_until("you> ")
        deadline = time.monotonic() + 20  # a loaded machine may take a while to see the client go
        while True:
            stopped = len(sent)
            time.sleep(1.0)  # 20 words' time at the story's pace
            if len(sent) == stopped or time.monotonic() > deadline:
                break
        assert len(sent) == stopped < 2000  # the server saw the client go: the generation stopped
        term.type("and then?")
        term.read_until("Answer to: and then?")
        term.read_until("you> ")
        messages = srv.requests[-1][2]["messages"]
        assert [(m["role"], m["content"]) for m in messages[1:]] == [
            ("user", "first question"), ("assistant", "<consciousness> Answer to: first question"),
            ("user", "and then?")]  # the earlier turn is in the history, the interrupted one is not
        os.write(term.fd, b"\x1b[A")  # arrow up recalls the last line
        term.read_until("and then?")
        term.type("")
        term.read_until("Answer to: and then?")
        term.read_until("you> ")
        assert srv.requests[-1][2]["messages"][-1]["content"] == "and then?" and len(srv.requests[-1][2]["messages"]) == 6
        term.type('"""')
        term.read_until("...> ")
        term.type("line one")
        term.read_until("...> ")
        term.type('line two"""')
        term.read_until("you> ")
        assert srv.requests[-1][2]["messages"][-1]["content"] == "line one\nline two"
        os.write(term.fd, b"\x03")
        term.read_until("(Ctrl-C again, Ctrl-D or /exit to leave)")
        term.read_until("you> ")  # the second press at the new prompt, as a person's would be
        os.write(term.fd, b"\x03")
    finally:
        code = term.close()
        srv.close()
    screen = term.screen
    assert code == 0, screen
    assert "<consciousness>" not in screen and "^[[A" not in screen and "Traceback" not in screen
    history = (tmp_path / ".codette" / "chat_history").read_text().splitlines()
    assert history == ["first question", "tell me a long story", "and then?", '"""', "line one", 'line two"""']


def test_ask_with_a_json_schema_answers_in_it(untrained, tmp_path, monkeypatch):
    """`codette ask --json-schema FILE` on an untrained checkpoint: its noise, held to the schema, is the answer."""
    import jsonschema
    from typer.testing import CliRunner

    import codette.cli.chat as chat
    from codette.cli.main import app
    from tests.test_constraints import SCHEMA

    out, real = io.StringIO(), chat.run_ask
    monkeypatch.setattr(chat, "run_ask", lambda *args, **kwargs: real(*args, **{**kwargs, "out": out}))
    schema = tmp_path / "shape.json"
    schema.write_text(json.dumps(SCHEMA), encoding="utf-8")
    ask = ["ask", "Describe a shape.", str(untrained[0]), "--tools", "off", "--workspace", str(tmp_path)]
    result = CliRunner().invoke(app, [*ask, "--json-schema", str(schema), "--temperature", "1"])
    assert result.exit_code == 0, result.output
    jsonschema.validate(json.loads(out.getvalue()), SCHEMA)
    missing = CliRunner().invoke(app, [*ask, "--json-schema", str(tmp_path / "nope.json")])
    assert isinstance(missing.exception, CodetteError) and "--json-schema: cannot read" in str(missing.exception)
    schema.write_text("[1, 2]", encoding="utf-8")
    listed = CliRunner().invoke(app, [*ask, "--json-schema", str(schema)])
    assert "must hold a JSON object" in str(listed.exception)
