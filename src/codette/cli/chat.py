"""`codette chat` (an interactive terminal chat) and `codette ask` (one question), over the agent.

The reply streams as it is generated; each tool call is shown when it runs and its result when it
returns. Chat commands: ``/perspective KEY [KEY...]`` (``off`` to stop; alone it lists them),
``/tools on|off|NAME,NAME``, ``/image PATH`` (attached to the next message), ``/set system "..."``,
``/clear`` (or ``/reset``), ``/save FILE``, ``/help`` (or ``/?``), ``/exit`` (or ``/bye``). At a
terminal it behaves as `ollama run` (:mod:`codette.cli.terminal`): readline editing and history,
``\"\"\"`` for several lines, Ctrl-C stops a reply and keeps the session, Ctrl-D or a second Ctrl-C at
an empty prompt leaves. The model's control markers are not shown unless ``--raw``.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from codette.cli.terminal import LineEditor, ctrl_c_stops, history_path, read_message
from codette.errors import CodetteError

if TYPE_CHECKING:
    from codette.cli.main import AgentOptions

HELP = """commands:
  /perspective KEY [KEY...]   answer from these perspectives (e.g. /perspective newton davinci); /perspective off
  /perspective                list the perspectives
  /tools on|off|NAME,NAME     offer the default tools, none, or the named ones
  /image PATH                 attach an image to the next message (analysed with analyze_image)
  /set system "TEXT"          the system prompt for this session (/set system alone shows it)
  /clear                      forget the conversation (/reset too)
  /save FILE                  write the conversation (messages and responses) as JSON
  /? or /help                 this list
  /exit                       leave (/bye, Ctrl-D, or Ctrl-C twice at an empty prompt)
\"\"\" starts a message of several lines and \"\"\" at the end of a line ends it; the arrow keys recall
earlier lines; Ctrl-C stops a reply (that turn is left out of the conversation)."""
RESULT_CHARS = 240


def parse_tools(value: str | None) -> list[str] | None:
    """``--tools`` / ``/tools``: None (defaults) for 'on' or nothing, [] for 'off', else the named tools."""
    if value is None or value.strip().lower() in ("", "on", "default"):
        return None
    if value.strip().lower() in ("off", "none"):
        return []
    return [t.strip() for t in value.split(",") if t.strip()]


def make_agent(options: AgentOptions, confirm: Callable[..., Any] | None = None) -> Any:
    """The agent for chat and ask: its tools work in ``options.workspace`` (default: the current folder)."""
    from codette.agent import MultimodalCodette

    return MultimodalCodette(options.model, tools=parse_tools(options.tools),
                             workspace=check_workspace(options.workspace), enable_python=options.python,
                             max_new_tokens=options.max_new_tokens, temperature=options.temperature,
                             max_rounds=options.max_rounds, device=options.device, confirm=confirm,
                             response_format=read_schema(options.json_schema))


def read_schema(path: Path | None) -> dict[str, Any] | None:
    """``--json-schema FILE``: the JSON schema the answers must follow, or a one-line error."""
    if path is None:
        return None
    try:
        schema = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise CodetteError(f"--json-schema: cannot read {path}: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CodetteError(f"--json-schema: {path} is not JSON ({exc})") from None
    if not isinstance(schema, dict):
        raise CodetteError(f"--json-schema: {path} must hold a JSON object (a JSON schema)")
    return schema


def check_workspace(path: Path | None) -> Path:
    """``--workspace`` as an existing folder, resolved; None is the current folder (where the user is)."""
    if path is None:
        try:
            return Path.cwd()
        except FileNotFoundError:
            raise CodetteError("the current folder no longer exists; cd somewhere or pass --workspace DIR") from None
    folder = path.expanduser()
    if not folder.exists():
        raise CodetteError(f"--workspace {path}: no such folder")
    if not folder.is_dir():
        raise CodetteError(f"--workspace {path}: not a folder")
    return folder.resolve()


# The confirmation before a tool changes files: each argument up to this many characters, and
# multi-line text (a file's content, Python code) up to this many lines.
CONFIRM_VALUE_CHARS = 200
CONFIRM_LINES = 12


def _visible(text: str) -> str:
    """``text`` with control and format characters escaped: the model's text must not move the cursor,
    recolour or rewrite the question the user answers."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def _cut(text: str, n: int = CONFIRM_VALUE_CHARS) -> str:
    return text if len(text) <= n else f"{text[:n]}... ({len(text)} characters)"


def describe_call(name: str, arguments: dict[str, Any]) -> list[str]:
    """The call as the confirmation shows it: one line per argument, long text cut, saying how long it was."""
    lines = [f"  {name} wants to change files in the workspace:"]
    for key, value in arguments.items():
        if isinstance(value, str) and "\n" in value.strip("\n"):
            rows = value.splitlines()
            lines.append(f"    {_visible(key)}: ({len(value)} characters, {len(rows)} lines)")
            lines += [f"      | {_cut(_visible(row.expandtabs(4)))}" for row in rows[:CONFIRM_LINES]]
            if len(rows) > CONFIRM_LINES:
                lines.append(f"      | ... and {len(rows) - CONFIRM_LINES} more lines")
        else:
            shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
            lines.append(f"    {_visible(key)}: {_cut(_visible(shown))}")
    return lines


def confirm_in_terminal(read: Callable[[str], str] = input, out: TextIO | None = None) -> Callable[[str, dict], bool]:
    """`codette chat`'s ``confirm``: show the call and ask y/N; anything but y/yes (Ctrl-C, Ctrl-D too) declines."""
    def confirm(name: str, arguments: dict[str, Any]) -> bool:
        stream = out or sys.stdout
        stream.write("\n" + "\n".join(describe_call(name, arguments)) + "\n")
        stream.flush()
        try:
            answer = read(f"  Allow {name}? [y/N] ")
        except (EOFError, KeyboardInterrupt):
            stream.write("\n")
            stream.flush()
            return False
        return answer.strip().lower() in ("y", "yes")

    return confirm


def refuse_without_yes(name: str, arguments: dict[str, Any]) -> str:
    """`codette ask`'s ``confirm`` without --yes: nobody is there to ask, so a call that changes files is refused."""
    return f"codette ask runs {name} only with --yes, so it did not run"


def _short(text: str, n: int = RESULT_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 3] + "..."


def print_event(event: Any, out: TextIO) -> None:
    """Text deltas as they come; tool calls and results on their own lines."""
    if event.type == "text":
        out.write(event.data["text"])
    elif event.type == "tool_call":
        out.write(f"\n  [tool] {event.data['name']} {json.dumps(event.data['arguments'], ensure_ascii=False)}\n")
    elif event.type == "tool_result":
        status = "ok" if event.data["ok"] else "failed"
        out.write(f"  [result {status}, {event.data['seconds']:.2f} s] {_short(event.data['result'])}\n")
    elif event.type == "repair":
        out.write(f"\n  [repair {event.data['try']}] {event.data['error']}\n")
    out.flush()


def footer(response: Any) -> str:
    m = response.metrics
    parts = []
    if m.get("completion_tokens") is not None:
        parts.append(f"{m['completion_tokens']} tokens")
    if m.get("tokens_per_s"):
        parts.append(f"{m['tokens_per_s']:.1f} tokens/s")
    parts.append(f"{m['latency_s']:.2f} s")
    if m.get("tool_rounds"):
        parts.append(f"{m['tool_rounds']} tool round{'s' if m['tool_rounds'] > 1 else ''}")
    if m.get("dropped_turns"):
        parts.append(f"{m['dropped_turns']} old turn(s) dropped to fit the context")
    return "(" + ", ".join(parts) + ")"


def run_turn(agent: Any, prompt: str, out: TextIO, **kwargs: Any) -> Any:
    """One streamed turn; returns the Response."""
    response = None
    for event in agent.iter_events(prompt, **kwargs):
        if event.type == "done":
            response = event.data["response"]
        else:
            print_event(event, out)
    return response


def run_ask(agent: Any, prompt: str, json_out: bool, images: list[Path], perspectives: list[str],
            out: TextIO = sys.stdout, err: TextIO | None = None, raw: bool = False) -> Any:
    """`codette ask`: stream the answer (or print the Response as JSON); an error ends with exit 2.

    The workspace goes to stderr, so stdout is the answer alone. ``raw`` keeps the control markers.
    """
    from codette.tooltable import CHANGES_FILES

    gated = [n for n in agent.tool_names if n in CHANGES_FILES] if agent.confirm is not None else []
    note = f" ({' and '.join(gated)} {'needs' if len(gated) == 1 else 'need'} --yes)" if gated else ""
    (err or sys.stderr).write(f"workspace: {agent.workspace}{note}\n")
    kwargs = {"images": images or None, "perspectives": perspectives or None, "raw": raw}
    if json_out:
        response = agent.respond(prompt, **kwargs)
        out.write(response.to_json() + "\n")
    else:
        response = run_turn(agent, prompt, out, **kwargs)
        out.write("\n")
    out.flush()
    if response.error:
        raise CodetteError(response.error)
    return response


class ChatSession:
    """The interactive loop; ``read`` and ``out`` are injectable so the loop can be driven in tests.

    With the default ``read`` at a terminal, lines are read through readline (:class:`LineEditor`).
    ``raw`` shows the model's control markers instead of hiding them.
    """

    def __init__(self, agent: Any, read: Callable[[str], str] = input, out: TextIO = sys.stdout, *,
                 raw: bool = False) -> None:
        self.agent, self.read, self.out, self.raw = agent, read, out, raw
        self.editor = LineEditor(history_path()) if read is input and sys.stdin.isatty() else None
        if self.editor is not None:
            self.read = self.editor.read
        self.history: list[dict] = []
        self.responses: list[dict] = []
        self.perspectives: list[str] = []
        self.images: list[str] = []

    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def command(self, line: str) -> bool:
        """Run a /command; False means leave."""
        name, _, arg = line[1:].partition(" ")
        arg = arg.strip()
        if name in ("exit", "quit", "bye"):
            return False
        if name in ("help", "?"):
            self.say(HELP)
        elif name in ("clear", "reset"):
            self.history, self.responses, self.images = [], [], []
            self.say("(conversation forgotten)")
        elif name == "set":
            self.setting(arg)
        elif name == "perspective" and not arg:
            self.say(list_perspectives(self.perspectives))
        elif name == "perspective":
            if arg == "off":
                self.perspectives = []
                self.say("(no perspective asked for)")
            else:
                from codette.agent.perspectives import check

                self.perspectives = check(arg.replace(",", " ").split())
                self.say(f"(perspectives: {', '.join(self.perspectives)})")
        elif name == "tools":
            self.agent.set_tools(parse_tools(arg or "on"))
            self.say(f"(tools: {', '.join(self.agent.tool_names) or 'none'})")
        elif name == "image":
            if not arg:
                raise CodetteError("/image needs a path, e.g. /image photo.png")
            from codette.agent.images import check_image

            self.images.append(str(check_image(arg)))
            self.say(f"(image {arg} attached to your next message)")
        elif name == "save":
            if not arg:
                raise CodetteError("/save needs a file name, e.g. /save chat.json")
            from codette.fileio import atomic_write_text

            atomic_write_text(Path(arg), json.dumps({"messages": self.history, "responses": self.responses},
                                                    indent=2, ensure_ascii=False))
            self.say(f"(saved {len(self.responses)} turn(s) to {arg})")
        else:
            raise CodetteError(f"unknown command /{name}; /help lists them")
        return True

    def setting(self, arg: str) -> None:
        """``/set system "TEXT"``: the system prompt from the next message on (``""`` for none)."""
        parts = arg.split(None, 1)
        what, value = (parts + ["", ""])[:2]
        if what != "system":
            raise CodetteError('/set knows one setting: /set system "You are ..."')
        value = value.strip()
        if not value:
            self.say(f"(system prompt: {self.agent.system or 'none'})")
            return
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1].strip()
        self.agent.system = value
        self.say("(system prompt set for this session)" if value else "(no system prompt for this session)")

    def run(self) -> None:
        self.say(f"Codette chat ({self.agent.backend.name}; tools: {', '.join(self.agent.tool_names) or 'none'}). "
                 f"/help for commands, /exit to leave.\n"
                 f"workspace: {self.agent.workspace} (you are asked before a tool changes files)")
        if self.editor is not None:
            self.editor.load()
        try:
            self.converse()
        finally:
            if self.editor is not None:
                try:
                    self.editor.save()
                except (OSError, CodetteError) as exc:
                    self.say(f"(the line history was not saved: {exc})")

    def converse(self) -> None:
        """Read and answer until /exit, Ctrl-D, or Ctrl-C twice in a row at an empty prompt."""
        pending: list[str] = []  # the lines of a \"\"\" message being typed
        idle_interrupts = 0
        while True:
            try:
                text, quoted = read_message(self.read, "you> ", "...> ", pending)
            except EOFError:
                self.say("")
                return
            except KeyboardInterrupt:
                self.say("")
                if pending or (self.editor is not None and self.editor.typed().strip()):
                    idle_interrupts = 0  # Ctrl-C drops what was typed, as a shell does
                    continue
                idle_interrupts += 1
                if idle_interrupts > 1:
                    return
                self.say("(Ctrl-C again, Ctrl-D or /exit to leave)")
                continue
            idle_interrupts = 0
            text = text.strip()
            if not text:
                continue
            try:
                if text.startswith("/") and not quoted:
                    if not self.command(text):
                        return
                    continue
                self.answer(text)
            except CodetteError as exc:
                self.say(f"error: {exc}")
            except KeyboardInterrupt:  # between the steps of a command or a turn: nothing half-done is kept
                self.say("\n(interrupted)")

    def answer(self, text: str) -> None:
        """One streamed turn. Ctrl-C stops it between two tokens and leaves it out of the conversation
        (the history stays as it was before the message), so the session goes on."""
        from codette.agent.loop import Cancelled

        stop = threading.Event()
        confirm = getattr(self.agent, "confirm", None)
        self.out.write("codette> ")
        try:
            with ctrl_c_stops(stop) as ctrl_c:
                if confirm is not None:  # Ctrl-C at a tool's y/N question declines it and stops the turn
                    self.agent.confirm = ctrl_c.asking(confirm)
                try:
                    response = run_turn(self.agent, text, self.out, images=self.images or None,
                                        perspectives=self.perspectives or None, history=self.history, stop=stop,
                                        raw=self.raw)
                finally:
                    if confirm is not None:
                        self.agent.confirm = confirm
        except (Cancelled, KeyboardInterrupt):
            self.say("\n(interrupted: this turn is left out of the conversation)")
            return
        self.images = []
        self.history += response.messages
        self.responses.append(response.to_dict())
        self.say("")
        if response.error:
            self.say(f"error: {response.error}")
        self.say(footer(response))


def list_perspectives(asked: list[str]) -> str:
    """The bare ``/perspective``: every perspective's key and name, and which are asked for now."""
    from codette.persona import PERSPECTIVES

    rows = "\n".join(f"  {key:<20}{name}" for key, name in PERSPECTIVES.items())
    return (f"perspectives (asked for now: {', '.join(asked) or 'none'}; /perspective KEY [KEY...] asks, "
            f"/perspective off stops):\n{rows}")
