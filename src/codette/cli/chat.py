"""`codette chat` (an interactive terminal chat) and `codette ask` (one question), over the agent.

The reply streams as it is generated; each tool call is shown when it runs and its result when it
returns. Chat commands: ``/perspective KEY [KEY...]`` (``off`` to stop), ``/tools on|off|NAME,NAME``,
``/image PATH`` (attached to the next message), ``/reset``, ``/save FILE``, ``/help``, ``/exit``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from codette.errors import CodetteError

HELP = """commands:
  /perspective KEY [KEY...]   answer from these perspectives (e.g. /perspective newton davinci); /perspective off
  /tools on|off|NAME,NAME     offer the default tools, none, or the named ones
  /image PATH                 attach an image to the next message (analysed with analyze_image)
  /reset                      forget the conversation
  /save FILE                  write the conversation (messages and responses) as JSON
  /help                       this list
  /exit                       leave (Ctrl-D works too)"""
RESULT_CHARS = 240


def parse_tools(value: str | None) -> list[str] | None:
    """``--tools`` / ``/tools``: None (defaults) for 'on' or nothing, [] for 'off', else the named tools."""
    if value is None or value.strip().lower() in ("", "on", "default"):
        return None
    if value.strip().lower() in ("off", "none"):
        return []
    return [t.strip() for t in value.split(",") if t.strip()]


def make_agent(model: str, tools: str | None, python: bool, workspace: Path | None, max_new_tokens: int,
               temperature: float, max_rounds: int, device: str) -> Any:
    from codette.agent import MultimodalCodette

    return MultimodalCodette(model, tools=parse_tools(tools), workspace=workspace, enable_python=python,
                             max_new_tokens=max_new_tokens, temperature=temperature, max_rounds=max_rounds,
                             device=device)


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
            out: TextIO = sys.stdout) -> Any:
    """`codette ask`: stream the answer (or print the Response as JSON); an error ends with exit 2."""
    kwargs = {"images": images or None, "perspectives": perspectives or None}
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
    """The interactive loop; ``read`` and ``out`` are injectable so the loop can be driven in tests."""

    def __init__(self, agent: Any, read: Callable[[str], str] = input, out: TextIO = sys.stdout) -> None:
        self.agent, self.read, self.out = agent, read, out
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
        if name in ("exit", "quit"):
            return False
        if name == "help":
            self.say(HELP)
        elif name == "reset":
            self.history, self.responses, self.images = [], [], []
            self.say("(conversation forgotten)")
        elif name == "perspective":
            if not arg or arg == "off":
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

    def run(self) -> None:
        self.say(f"Codette chat ({self.agent.backend.name}; tools: {', '.join(self.agent.tool_names) or 'none'}). "
                 f"/help for commands, /exit to leave.")
        while True:
            try:
                line = self.read("you> ").strip()
            except EOFError:
                self.say("")
                return
            if not line:
                continue
            try:
                if line.startswith("/"):
                    if not self.command(line):
                        return
                    continue
                self.out.write("codette> ")
                response = run_turn(self.agent, line, self.out, images=self.images or None,
                                    perspectives=self.perspectives or None, history=self.history)
                self.images = []
                self.history += response.messages
                self.responses.append(response.to_dict())
                self.say("")
                if response.error:
                    self.say(f"error: {response.error}")
                self.say(footer(response))
            except CodetteError as exc:
                self.say(f"error: {exc}")
