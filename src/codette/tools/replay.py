"""Replaying a recorded tool call: rebuild the workspace it ran in, run the call for real.

A tool conversation in the data records its *setup* (the files, folders and images its workspace
held, the server clock) next to the call. :class:`ReplayWorkspace` rebuilds exactly that setup on a
scratch folder before each call and runs the call through :class:`~codette.tools.Toolbox`, so the
data generator (which records the results) and the evaluation (which runs the model's own calls on
the same setup) get what the tool really returns.

Network tools never leave the machine: ``http_request`` goes to a :class:`FixtureServer` on an
ephemeral local port, written as the fixed address :data:`CANONICAL_BASE` in calls and results;
``web_search`` uses the offline recorded pages (no endpoint configured).
"""

from __future__ import annotations

import copy
import logging
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

from PIL import Image

from codette.tools.base import ToolResult
from codette.tools.fixture_server import FixtureServer
from codette.tools.registry import Toolbox
from codette.tooltable import TOOL_NAMES

# Where calls and results say the local fixture service lives; the workspace maps it to the real port.
CANONICAL_BASE = "http://localhost:8000"
DEFAULT_CLOCK = 1_700_000_000.0


def make_image(path: Path, spec: dict[str, Any]) -> None:
    """An image from its recorded spec: size, fill colour, optional second-colour band, mode, format."""
    w, h = spec["size"]
    img = Image.new("RGB", (w, h), tuple(spec["fill"]))
    band = spec.get("band")
    if band:
        # The left ``fraction`` of the image in a second colour.
        cut = max(1, int(w * band["fraction"]))
        img.paste(Image.new("RGB", (cut, h), tuple(band["color"])), (0, 0))
    if spec.get("mode", "RGB") != "RGB":
        img = img.convert(spec["mode"])
    img.save(path, format=spec["format"])


class ReplayWorkspace:
    """One Toolbox on a scratch workspace, a lazily started fixture server, and a fixed server clock.

    One call at a time (a lock keeps a call's setup from being replaced under it); use as a context
    manager so the Python worker and the server stop.
    """

    def __init__(self, workspace: Path | str | None = None, persistent_python: bool = True) -> None:
        self._tmp = None if workspace is not None else tempfile.TemporaryDirectory(prefix="codette-tools-")
        self.root = Path(workspace if workspace is not None else self._tmp.name)  # type: ignore[union-attr]
        # All eleven tools; http_request may reach only the fixture server's port (allowed once it starts).
        self.toolbox = Toolbox(self.root / "ws", persistent_python=persistent_python, enabled=TOOL_NAMES,
                               allowed_hosts=())
        self.ws = self.toolbox.workspace.root
        self._server: FixtureServer | None = None
        self._clock = DEFAULT_CLOCK
        self._lock = threading.Lock()
        self.calls = 0  # calls run
        # httpx logs every request at INFO; thousands of fixture requests would drown the CLI's output.
        logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger("httpx").level))

    # -- fixture server -----------------------------------------------------------------------------
    def _real_base(self) -> str:
        if self._server is None:
            self._server = FixtureServer(clock=lambda: self._clock).start()
            self.toolbox.allow_hosts([f"localhost:{self._server.port}", f"127.0.0.1:{self._server.port}"])
        return f"http://localhost:{self._server.port}"

    def _localize(self, arguments: dict[str, Any]) -> dict[str, Any]:
        url = arguments.get("url")
        if isinstance(url, str) and url.startswith(CANONICAL_BASE):
            arguments = {**arguments, "url": self._real_base() + url[len(CANONICAL_BASE):]}
        return arguments

    def _canonical(self, result: ToolResult) -> ToolResult:
        if self._server is None:
            return result
        real = f"http://localhost:{self._server.port}"
        content = result.content.replace(real, CANONICAL_BASE)
        error = result.error.replace(real, CANONICAL_BASE) if result.error else result.error
        return ToolResult(result.ok, content, error)

    # -- workspace -----------------------------------------------------------------------------------
    def _reset(self) -> None:
        for child in self.ws.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()

    def _materialize(self, setup: dict[str, Any]) -> None:
        for rel, text in setup.get("files", {}).items():
            p = self.ws / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text, encoding="utf-8")
        for rel in setup.get("dirs", []):
            (self.ws / rel).mkdir(parents=True, exist_ok=True)
        for rel, spec in setup.get("images", {}).items():
            p = self.ws / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            make_image(p, spec)
        self._clock = float(setup.get("clock", DEFAULT_CLOCK))

    def run(self, setup: dict[str, Any], name: str, arguments: dict[str, Any]) -> ToolResult:
        """Rebuild the workspace from ``setup``, run one call, return its result with canonical addresses.

        Raises :class:`~codette.tools.ToolError` for an unknown tool or arguments that do not match
        its schema (as :meth:`Toolbox.run` does); a tool that fails is a ``ToolResult(ok=False)``.
        """
        with self._lock:
            self._reset()
            self._materialize(setup)
            self.calls += 1
            if name == "http_request":
                self._real_base()  # the allowlist names the fixture server in every refusal too
            return self._canonical(self.toolbox.run(name, self._localize(copy.deepcopy(arguments))))

    def close(self) -> None:
        self.toolbox.close()
        if self._server is not None:
            self._server.stop()
            self._server = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> ReplayWorkspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
