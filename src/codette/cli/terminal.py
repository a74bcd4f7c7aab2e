"""`codette chat` at a terminal, as `ollama run` behaves: line editing and history, ``\"\"\"`` messages, Ctrl-C.

* :class:`LineEditor`: ``input()`` with GNU readline (the standard library's ``readline``): arrow keys
  move and recall, and the history of what was typed is kept across sessions in
  ``~/.codette/chat_history`` (``CODETTE_HISTORY`` names another file; set it empty for none),
  rewritten atomically when the chat ends.
* :func:`read_message`: a line, or several between ``\"\"\"`` (a line starting with ``\"\"\"`` begins,
  a line ending with ``\"\"\"`` ends), as `ollama run` reads them.
* :func:`ctrl_c_stops`: while a reply is generated, Ctrl-C sets the turn's ``stop`` event, so the
  agent ends the turn between two tokens (the backend's generator is closed there, not torn apart
  mid-step); a second Ctrl-C interrupts at once (a tool that will not finish, a stuck server), and
  so does one while the turn asks the user something (a tool's y/N, which it then declines).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

HISTORY_ENV = "CODETTE_HISTORY"
HISTORY_LENGTH = 1000  # lines kept in the history file
QUOTES = '"""'
T = TypeVar("T")


def history_path() -> Path | None:
    """Where the chat's line history is kept: ``$CODETTE_HISTORY`` (empty: nowhere), else
    ``~/.codette/chat_history``; None when there is no home folder."""
    chosen = os.environ.get(HISTORY_ENV)
    if chosen is not None:
        return Path(chosen).expanduser() if chosen.strip() else None
    try:
        return Path.home() / ".codette" / "chat_history"
    except RuntimeError:  # no HOME and no password entry
        return None


class LineEditor:
    """``input()`` with readline editing and a history that outlives the session.

    Only what :meth:`read` returns goes into the history (auto-history is off), so the answers to
    other questions asked during a turn (a tool's y/N) are not recalled with the arrow keys.
    :meth:`load` reads the history file, :meth:`save` writes it.
    """

    def __init__(self, history_file: Path | None = None) -> None:
        self.history_file = history_file
        self._rl: ModuleType | None = None

    def load(self) -> None:
        """Switch readline on and recall the earlier sessions' lines (an unreadable file is skipped)."""
        try:
            import readline
        except ImportError:  # a Python built without it: plain input()
            return
        self._rl = readline
        readline.set_auto_history(False)
        if self.history_file is not None and self.history_file.is_file():
            with contextlib.suppress(OSError):
                readline.read_history_file(str(self.history_file))

    def read(self, prompt: str) -> str:
        """One line from the terminal; a line with text is added to the history (not twice in a row)."""
        line = input(prompt)
        rl = self._rl
        if rl is not None and line.strip():
            n = rl.get_current_history_length()
            if not n or rl.get_history_item(n) != line:
                rl.add_history(line)
        return line

    def typed(self) -> str:
        """What was on the line when the reading was interrupted (Ctrl-C)."""
        return self._rl.get_line_buffer() if self._rl is not None else ""

    def save(self) -> None:
        """Write the last :data:`HISTORY_LENGTH` lines to the history file, atomically, in a private folder."""
        rl, path = self._rl, self.history_file
        if rl is None or path is None:
            return
        from codette.fileio import atomic_write_text

        n = rl.get_current_history_length()
        lines = [rl.get_history_item(i) for i in range(max(1, n - HISTORY_LENGTH + 1), n + 1)]
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        atomic_write_text(path, "".join(f"{line}\n" for line in lines if line))


def read_message(read: Callable[[str], str], prompt: str, more: str, lines: list[str]) -> tuple[str, bool]:
    """One message and whether it was quoted: a line, or the lines between ``\"\"\"`` and ``\"\"\"``.

    ``lines`` collects the lines of a quoted message as they come, so that a caller interrupted in the
    middle (Ctrl-C) knows something had been typed. ``/set system \"\"\"...\"\"\"`` may span lines too.
    """
    lines.clear()
    line = read(prompt)
    head, body = "", line.lstrip()
    if body.startswith("/set system ") and body[len("/set system "):].lstrip().startswith(QUOTES):
        head, body = "/set system ", body[len("/set system "):].lstrip()
    if not body.startswith(QUOTES):
        return line, False
    body = body[len(QUOTES):]
    while not body.rstrip().endswith(QUOTES):
        lines.append(body)
        body = read(more)
    lines.append(body.rstrip()[: -len(QUOTES)])
    return head + "\n".join(lines), not head


class CtrlC:
    """What Ctrl-C does while a turn runs (see :func:`ctrl_c_stops`)."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self._asking = False

    def pressed(self, signum: int, frame: object) -> None:
        """The first press asks the turn to stop; a second press, or one while the user is being asked
        a question, raises KeyboardInterrupt where the program stands."""
        urgent = self.stop.is_set() or self._asking
        self.stop.set()
        if urgent:
            raise KeyboardInterrupt

    def asking(self, ask: Callable[..., T]) -> Callable[..., T]:
        """``ask`` (a question put to the user during the turn, such as a tool's y/N) made so that Ctrl-C
        interrupts the question at once, as it does at any prompt, and stops the turn too."""
        def asked(*args: Any, **kwargs: Any) -> T:
            self._asking = True
            try:
                return ask(*args, **kwargs)
            finally:
                self._asking = False

        return asked


@contextlib.contextmanager
def ctrl_c_stops(stop: threading.Event) -> Iterator[CtrlC]:
    """While the block runs, the first Ctrl-C sets ``stop`` and the second raises KeyboardInterrupt.

    Only the main thread can own a signal handler; elsewhere Ctrl-C keeps its usual meaning.
    """
    ctrl_c = CtrlC(stop)
    if threading.current_thread() is not threading.main_thread():
        yield ctrl_c
        return
    previous = signal.signal(signal.SIGINT, ctrl_c.pressed)
    try:
        yield ctrl_c
    finally:
        signal.signal(signal.SIGINT, previous)
