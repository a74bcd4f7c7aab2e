"""Running real tools for the generator: every recorded call checked and run on its rebuilt workspace.

Every tool conversation records its *setup* (the files and images its workspace held, the server
clock) next to the call, and :class:`ToolRunner` rebuilds exactly that workspace before running the
call (:class:`codette.tools.replay.ReplayWorkspace`). So a result in the data is what the tool really
returned, and anyone can replay it (:func:`replay`) on a fresh workspace. On top of the replay, the
generator's calls are checked against the schemas the model is shown (:mod:`codette.tooltable`), and
results of calls already made are reused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema

from codette.errors import CodetteError
from codette.tools import ToolResult
from codette.tools.replay import CANONICAL_BASE, ReplayWorkspace
from codette.tooltable import SPECS, tool_schema

__all__ = ["CANONICAL_BASE", "ToolRunner", "check_call", "replay"]

CACHE_SIZE = 50_000  # results kept for repeated calls (cleared when full)

_VALIDATORS = {n: jsonschema.Draft202012Validator(tool_schema(n, required=True)["function"]["parameters"])
               for n in SPECS}


def check_call(name: str, arguments: dict[str, Any]) -> None:
    """Raise CodetteError unless ``arguments`` satisfy both the compact and the full schema of ``name``."""
    if name not in SPECS:
        raise CodetteError(f"generated a call to unknown tool {name!r}")
    err = jsonschema.exceptions.best_match(_VALIDATORS[name].iter_errors(arguments))
    if err is not None:
        raise CodetteError(f"generated call to {name} does not match its compact schema: {err.message}")
    err = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(SPECS[name].parameters).iter_errors(arguments))
    if err is not None:
        raise CodetteError(f"generated call to {name} does not match its schema: {err.message}")


class ToolRunner(ReplayWorkspace):
    """The generator's replay workspace: each call is checked against both schemas first, and with
    ``cache=True`` the result of a call already made is reused.

    Use as a context manager so the Python worker and the fixture server stop.
    """

    def __init__(self, workspace: Path | str | None = None, cache: bool = False) -> None:
        super().__init__(workspace)
        self.cache = cache
        self._results: dict[str, ToolResult] = {}

    def run(self, setup: dict[str, Any], name: str, arguments: dict[str, Any]) -> ToolResult:
        """Validate and run one call on the workspace rebuilt from ``setup``; its canonical result.

        A call is a pure function of (setup, tool, arguments): that is what makes it replayable. So
        the result of a call already made is reused with ``cache=True`` (what the generator uses): the
        generator redraws duplicates, and at 200,000 samples many redrawn knowledge-base and search
        calls repeat an earlier one.
        """
        check_call(name, arguments)
        key = json.dumps([setup, name, arguments], sort_keys=True) if self.cache else None
        if key is not None and key in self._results:
            return self._results[key]
        result = super().run(setup, name, arguments)
        if key is not None:
            if len(self._results) >= CACHE_SIZE:
                self._results.clear()
            self._results[key] = result
        return result


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
