"""The Toolbox: Codette's 11 tools, their JSON schemas, argument validation and execution.

The tool table (:mod:`codette.tooltable`) gives each tool's name, description and full JSON schema;
the Toolbox wires each to its implementation and validates every call against that schema.
The data generator, the agent loop and the evaluation all run tools through :meth:`Toolbox.run`,
so what the model sees in training is exactly what it sees at inference.

A model's call is untrusted input (docs/SECURITY.md): execute_python is off unless enabled, and
then runs each snippet in its own sandbox (:mod:`codette.tools.sandbox`); only the data generator,
running its own snippets, uses the fast persistent worker (``persistent_python=True``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jsonschema

from codette.tools import bounded, data_analysis, files, image, knowledge, limits, python_exec, sandbox, web
from codette.tools import calculator as calc_mod
from codette.tools.base import Tool, ToolError, ToolFailure, ToolResult
from codette.tools.calls import ToolCall
from codette.tooltable import DEFAULT_TOOLS, SPECS, TOOL_NAMES

log = logging.getLogger(__name__)

# The only functions the analysis process runs: the parsers of a workspace file's bytes (docs/SECURITY.md).
BOUNDED_OPERATIONS = (data_analysis.table_summary, image.describe_image)
MAX_ARGUMENT_CHARS = 2 * 1024 * 1024
MAX_ARGUMENT_DEPTH = 32
MAX_ERROR_CHARS = 300


def _field_of(error: jsonschema.ValidationError) -> str:
    """The argument a schema error is about (dotted path), including the missing one for 'required'."""
    path = ".".join(str(p) for p in error.absolute_path)
    if error.validator == "required" and isinstance(error.instance, dict):
        missing = [r for r in error.validator_value if r not in error.instance]
        if missing:
            return ".".join(filter(None, [path, missing[0]]))
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = set(error.schema.get("properties", {}))
        extra = sorted(k for k in error.instance if k not in allowed)
        if extra:
            return ".".join(filter(None, [path, extra[0]]))
    return path or "(arguments)"


def _error_text(name: str, error: jsonschema.ValidationError) -> str:
    """One sentence naming the tool and the argument, phrased for a person (or the model) to fix it."""
    if error.validator == "anyOf" and all("required" in s for s in error.validator_value):
        options = " or ".join(f"'{s['required'][0]}'" for s in error.validator_value)
        return f"tool '{name}': give at least one of the arguments {options}"
    field = _field_of(error)
    if error.validator == "required":
        return f"tool '{name}': missing required argument '{field}'"
    if error.validator == "additionalProperties":
        allowed = ", ".join(error.schema.get("properties", {})) or "none"
        return f"tool '{name}': unexpected argument '{field}'; allowed arguments: {allowed}"
    message = error.message
    if len(message) > MAX_ERROR_CHARS:  # jsonschema quotes the whole value: keep the message one short line
        message = {"maxLength": f"longer than {error.validator_value} characters",
                   "minLength": f"shorter than {error.validator_value} characters"}.get(
            str(error.validator), f"does not match the schema ({error.validator})")
    return f"tool '{name}': invalid argument '{field}': {message}"


class Toolbox:
    """Codette's tools bound to one workspace folder and one set of network/time limits.

    ``enabled`` defaults to every tool but execute_python. ``allowed_hosts`` are ``host:port``
    entries (default: none). ``persistent_python=True`` runs execute_python in one long-lived
    :class:`PythonWorker` without a sandbox: only for the data generator's own, trusted snippets;
    every other caller gets the per-call sandbox. Call :meth:`close` (or use ``with``) to stop the
    worker processes.
    """

    def __init__(
        self,
        workspace: Path | str,
        *,
        allowed_hosts: Iterable[str] = web.DEFAULT_ALLOWED_HOSTS,
        http_timeout: float = web.DEFAULT_HTTP_TIMEOUT_S,
        python_timeout: float = python_exec.DEFAULT_TIMEOUT_S,
        python_memory_mb: int = python_exec.DEFAULT_MEMORY_MB,
        persistent_python: bool = False,
        search_endpoint: str | None = None,
        knowledge_base: knowledge.KnowledgeBase | None = None,
        max_read_bytes: int = files.DEFAULT_MAX_READ_BYTES,
        enabled: Iterable[str] | None = None,
        python_disk_mb: int = sandbox.DEFAULT_DISK_MB,
        python_max_processes: int = sandbox.DEFAULT_MAX_PROCESSES,
        workspace_quota_bytes: int = files.DEFAULT_WORKSPACE_QUOTA_BYTES,
        analysis_timeout: float = bounded.DEFAULT_TIMEOUT_S,
    ) -> None:
        self.workspace = files.Workspace(workspace, workspace_quota_bytes)
        self.allowed_hosts = web.normalise_hosts(allowed_hosts)
        self._search_hosts = web.endpoint_entry(search_endpoint)
        self.http_timeout = http_timeout
        self.python_timeout = python_timeout
        self.python_memory_mb = python_memory_mb
        self.python_disk_mb = python_disk_mb
        self.python_max_processes = python_max_processes
        self.persistent_python = persistent_python
        self._analysis = bounded.BoundedWorker(BOUNDED_OPERATIONS, timeout_s=analysis_timeout)
        self.search_endpoint = search_endpoint
        self.max_read_bytes = max_read_bytes
        self._kb = knowledge_base
        self._worker: python_exec.PythonWorker | None = None
        self._worker_lock = threading.Lock()
        self._sandbox_lock = threading.Lock()
        impls = self._implementations()
        names = list(DEFAULT_TOOLS) if enabled is None else list(enabled)
        unknown = [n for n in names if n not in SPECS]
        if unknown:
            raise ToolError(f"unknown tool {unknown[0]!r}; available: {', '.join(TOOL_NAMES)}")
        self.tools: dict[str, Tool] = {
            n: Tool(name=n, description=SPECS[n].description, parameters=SPECS[n].parameters, func=impls[n])
            for n in names
        }
        self._validators = {n: jsonschema.Draft202012Validator(t.parameters) for n, t in self.tools.items()}

    # -- implementations bound to this toolbox's settings ------------------------------------------
    def _implementations(self) -> dict[str, Any]:
        ws = self.workspace
        return {
            "read_file": lambda path: files.read_file(ws, path, self.max_read_bytes),
            "write_file": lambda path, content, append=False: files.write_file(ws, path, content, append),
            "list_directory": lambda path=".", recursive=False: files.list_directory(ws, path, recursive),
            "search_files": lambda pattern=None, query=None, path=".", max_results=50: files.search_files(
                ws, pattern, query, path, max_results),
            "execute_python": self._execute_python,
            "calculator": calc_mod.calculator,
            "analyze_data": lambda path, column=None, operation=None: data_analysis.analyze_data(
                ws, path, column, operation, self._analysis),
            "query_knowledge_base": lambda query, top_k=3: knowledge.query_knowledge_base(
                self.knowledge_base, query, top_k),
            "http_request": self._http_request,
            "web_search": lambda query, max_results=5: web.web_search(
                query, max_results, self.search_endpoint, self.allowed_hosts | self._search_hosts, self.http_timeout),
            "analyze_image": lambda path: image.analyze_image(ws, path, self._analysis),
        }

    @property
    def knowledge_base(self) -> knowledge.KnowledgeBase:
        """Built on first use: most toolboxes never search it."""
        if self._kb is None:
            self._kb = knowledge.KnowledgeBase.default()
        return self._kb

    def allow_hosts(self, entries: Iterable[str]) -> None:
        """Add ``host:port`` entries to the allowlist (e.g. a local service started after the toolbox)."""
        self.allowed_hosts = self.allowed_hosts | web.normalise_hosts(entries)

    def _execute_python(self, code: str) -> dict[str, Any]:
        if self.persistent_python:  # trusted snippets only (the data generator's)
            with self._worker_lock:
                if self._worker is None:
                    self._worker = python_exec.PythonWorker(self.workspace.root, self.python_timeout,
                                                            self.python_memory_mb)
                worker = self._worker
            result = worker.run(code)
        else:
            with self._sandbox_lock:  # one call at a time: each copies the workspace in and its changes back
                result = sandbox.run_sandboxed(code, self.workspace, self.python_timeout, self.python_memory_mb,
                                               self.python_disk_mb, self.python_max_processes)
        message = result.error_message(self.python_timeout)
        if message is not None:
            raise ToolFailure(message, result.payload())
        return result.payload()

    def _http_request(self, url: str, method: str = "GET", params: dict[str, Any] | None = None,
                      headers: dict[str, str] | None = None, body: str | None = None,
                      **kwargs: Any) -> dict[str, Any]:
        return web.http_request(url, self.allowed_hosts, method, params, headers, body, kwargs.get("json"),
                                self.http_timeout)

    # -- public API ----------------------------------------------------------------------------------
    def names(self) -> list[str]:
        return list(self.tools)

    def schemas(self, names: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """OpenAI-style tool list for the chat template (all tools, or the named ones in that order)."""
        wanted = self.names() if names is None else list(names)
        return [self._tool(n).schema() for n in wanted]

    def _tool(self, name: str) -> Tool:
        tool = self.tools.get(name)
        if tool is None:
            raise ToolError(f"unknown tool '{name}'; available: {', '.join(self.tools)}")
        return tool

    def validate(self, name: str, arguments: Mapping[str, Any] | str) -> dict[str, Any]:
        """The arguments as a dict if they match the tool's schema; ToolError naming tool and field otherwise."""
        self._tool(name)
        if isinstance(arguments, str):
            try:
                arguments = limits.loads(arguments, MAX_ARGUMENT_CHARS, MAX_ARGUMENT_DEPTH)
            except limits.JSONLimitError as exc:
                raise ToolError(f"tool '{name}': arguments are not valid JSON ({exc})") from None
        if not isinstance(arguments, Mapping):
            raise ToolError(f"tool '{name}': arguments must be an object, got {type(arguments).__name__}")
        if limits.value_depth(arguments, MAX_ARGUMENT_DEPTH) > MAX_ARGUMENT_DEPTH:
            raise ToolError(f"tool '{name}': arguments are nested more than {MAX_ARGUMENT_DEPTH} levels deep")
        args = dict(arguments)
        try:
            err = jsonschema.exceptions.best_match(self._validators[name].iter_errors(args))
        except (RecursionError, ValueError, OverflowError) as exc:
            raise ToolError(f"tool '{name}': arguments cannot be checked ({type(exc).__name__})") from None
        if err is not None:
            raise ToolError(_error_text(name, err))
        return args

    def run(self, name: str, arguments: Mapping[str, Any] | str) -> ToolResult:
        """Validate and execute one call. Raises ToolError only for an unknown tool or invalid arguments;
        a tool that fails returns ``ToolResult(ok=False)`` with a message for the model."""
        args = self.validate(name, arguments)
        tool = self.tools[name]
        try:
            return ToolResult.success(tool.func(**args))
        except ToolFailure as exc:
            log.debug("tool %s failed: %s", name, exc.message)
            return ToolResult.failure(exc.message, exc.payload)
        except PermissionError as exc:
            return ToolResult.failure(f"permission denied: {exc.filename or exc}")
        except OSError as exc:
            return ToolResult.failure(f"{name} failed: {exc.strerror or exc}")
        except RecursionError:
            return ToolResult.failure(f"{name} failed: the input is nested too deeply")
        except (OverflowError, ValueError) as exc:
            return ToolResult.failure(f"{name} failed: {type(exc).__name__}: {str(exc)[:160]}")
        except Exception as exc:  # a bug in a tool must not kill the conversation; keep the traceback in the log
            log.exception("tool %s raised", name)
            return ToolResult.failure(f"internal error in tool '{name}': {type(exc).__name__}: {exc}")

    def run_call(self, call: ToolCall) -> ToolResult:
        """Execute a parsed model call; never raises for the model's mistakes (they become the result)."""
        try:
            return self.run(call.name, call.arguments)
        except ToolError as exc:
            return ToolResult.failure(str(exc))

    def close(self) -> None:
        """Stop the persistent Python worker and the analysis process, if any."""
        with self._worker_lock:
            if self._worker is not None:
                self._worker.close()
                self._worker = None
        self._analysis.close()

    def __enter__(self) -> Toolbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


ToolRegistry = Toolbox
