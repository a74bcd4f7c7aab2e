"""Running real tools for the generator: a scratch workspace rebuilt per sample, and compact schemas.

Every tool conversation records its *setup* (the files and images its workspace held, the server
clock) next to the call, and :class:`ToolRunner` rebuilds exactly that workspace before running the
call through :class:`codette.tools.Toolbox`. So a result in the data is what the tool really
returned, and anyone can replay it (:func:`replay`) on a fresh workspace.

Network tools never leave the machine: ``http_request`` goes to a :class:`FixtureServer` on an
ephemeral local port, shown in the data at the fixed address :data:`CANONICAL_BASE`; ``web_search``
uses the offline recorded pages (no endpoint configured).
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

import jsonschema
from PIL import Image

from codette.errors import CodetteError
from codette.persona import TOOL_SCHEMAS, tool_schema
from codette.tools import FixtureServer, Toolbox, ToolResult
from codette.tools.registry import SCHEMAS

log = logging.getLogger(__name__)

# Where the data says the local fixture service lives; the runner maps it to the real port.
CANONICAL_BASE = "http://localhost:8000"
DEFAULT_CLOCK = 1_700_000_000.0
CACHE_SIZE = 50_000  # results kept for repeated calls (cleared when full)

_COMPACT = TOOL_SCHEMAS
compact_schema = tool_schema  # the schemas shown to the model live in the persona


_VALIDATORS = {n: jsonschema.Draft202012Validator(compact_schema(n, required=True)["function"]["parameters"])
               for n in _COMPACT}


def check_call(name: str, arguments: dict[str, Any]) -> None:
    """Raise CodetteError unless ``arguments`` satisfy both the compact and the full schema of ``name``."""
    if name not in _COMPACT:
        raise CodetteError(f"generated a call to unknown tool {name!r}")
    err = jsonschema.exceptions.best_match(_VALIDATORS[name].iter_errors(arguments))
    if err is not None:
        raise CodetteError(f"generated call to {name} does not match its compact schema: {err.message}")
    err = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(SCHEMAS[name][1]).iter_errors(arguments))
    if err is not None:
        raise CodetteError(f"generated call to {name} does not match its schema: {err.message}")


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


class ToolRunner:
    """One Toolbox on a scratch workspace, a lazily started fixture server, and a fixed server clock.

    Not thread-safe (one generator at a time); use as a context manager so the Python worker and the
    server stop.
    """

    def __init__(self, workspace: Path | str | None = None, cache: bool = False) -> None:
        self._tmp = None if workspace is not None else tempfile.TemporaryDirectory(prefix="codette-tools-")
        self.root = Path(workspace if workspace is not None else self._tmp.name)  # type: ignore[union-attr]
        self.toolbox = Toolbox(self.root / "ws", persistent_python=True, allowed_hosts=("localhost", "127.0.0.1"))
        self.ws = self.toolbox.workspace.root
        self._server: FixtureServer | None = None
        self._clock = DEFAULT_CLOCK
        self._lock = threading.Lock()
        self.calls = 0  # calls actually run (cached results not counted)
        self.cache = cache
        self._results: dict[str, ToolResult] = {}
        # httpx logs every request at INFO; thousands of fixture requests would drown the CLI's output.
        logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger("httpx").level))

    # -- fixture server -----------------------------------------------------------------------------
    def _real_base(self) -> str:
        if self._server is None:
            self._server = FixtureServer(clock=lambda: self._clock).start()
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
        """Rebuild the workspace from ``setup``, validate and run one call, return its canonical result.

        A call is a pure function of (setup, tool, arguments): that is what makes it replayable. So
        the result of a call already made is reused with ``cache=True`` (what the generator uses): the
        generator redraws duplicates, and at 200,000 samples many redrawn knowledge-base and search
        calls repeat an earlier one.
        """
        check_call(name, arguments)
        key = json.dumps([setup, name, arguments], sort_keys=True) if self.cache else None
        if key is not None and key in self._results:
            return self._results[key]
        with self._lock:
            self._reset()
            self._materialize(setup)
            self.calls += 1
            result = self._canonical(self.toolbox.run(name, self._localize(copy.deepcopy(arguments))))
        if key is not None:
            if len(self._results) >= CACHE_SIZE:
                self._results.clear()
            self._results[key] = result
        return result

    def close(self) -> None:
        self.toolbox.close()
        if self._server is not None:
            self._server.stop()
            self._server = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> ToolRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def replay(record: dict[str, Any], runner: ToolRunner | None = None) -> ToolResult:
    """Re-run a generated record's tool call on a workspace rebuilt from its recorded setup."""
    if not record.get("tool"):
        raise CodetteError("record has no tool call to replay")
    own = runner is None
    runner = runner or ToolRunner()
    try:
        return runner.run(record.get("setup", {}), record["tool"], record["tool_arguments"])
    finally:
        if own:
            runner.close()
