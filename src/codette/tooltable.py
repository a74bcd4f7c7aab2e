"""The tool table: Codette's eleven tools, each written once.

A row says what a tool is for (in the words identity answers use), its full JSON schema (what the
Toolbox validates a call against), the compact form the model is shown in its prompt, how other
clients word that form, and whether the agent offers it by default. The Toolbox
(:mod:`codette.tools.registry`), the data generator, the evaluation and the agent read their views
from here, so adding or changing a tool is one edit; ``tests/test_tooltable.py`` checks that the
views agree. Standard library only, like the persona: reading a tool's name never imports a stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Limits the full schemas state and the tools enforce themselves (they read them from here).
MAX_WRITE_CHARS = 1024 * 1024
MAX_CODE_CHARS = 20000
MAX_EXPRESSION_CHARS = 500
MAX_REQUEST_BODY_CHARS = 64 * 1024
ANALYSIS_OPERATIONS = ("mean", "sum", "min", "max", "median", "std", "count")


@dataclass(frozen=True)
class ToolSpec:
    """One tool: its full schema for validation and its compact form for a small model's prompt.

    The compact form keeps a short description and only the parameters the data uses, because a
    tiny model's context cannot hold the full schemas (over a thousand tokens for all eleven). It is
    a subset of the full schema, so a call that validates against it validates against the Toolbox.
    """

    name: str
    purpose: str  # what it is for, after "to" or "lets me" in identity answers
    description: str  # the full description the Toolbox gives
    parameters: dict[str, Any]  # the full JSON schema of the arguments
    compact_description: str  # the description the model is shown
    compact_parameters: dict[str, str]  # the parameters the model is shown: name -> JSON type
    compact_required: tuple[str, ...]  # shown only when asked for (about 7 tokens a tool)
    rewordings: tuple[str, ...]  # the compact description as other clients word it (names and parameters kept)
    default: bool = True  # offered unless switched on: execute_python runs code the model wrote
    changes_files: bool = False  # writes in the workspace: an agent in a user's folder asks before running it


def _obj(properties: dict[str, Any], required: tuple[str, ...] = (), **extra: Any) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(required), "additionalProperties": False,
            **extra}


_PATH = {"type": "string", "minLength": 1, "maxLength": 1024}

# In the order the agent sends them (the data shows the same order).
SPECS: dict[str, ToolSpec] = {spec.name: spec for spec in (
    ToolSpec(
        "read_file", "read a file in the workspace",
        "Read a text file from the workspace. Large files are truncated at 64 KiB.",
        _obj({"path": {**_PATH, "description": "File path relative to the workspace."}}, ("path",)),
        "Read a text file.", {"path": "string"}, ("path",),
        ("Return the contents of a file in the workspace.", "Open a file and read its text."),
    ),
    ToolSpec(
        "write_file", "write a file in the workspace",
        "Create or overwrite a text file in the workspace (or append to it).",
        _obj({"path": {**_PATH, "description": "File path relative to the workspace."},
              "content": {"type": "string", "maxLength": MAX_WRITE_CHARS, "description": "Text to write."},
              "append": {"type": "boolean", "description": "Append instead of overwriting (default false)."}},
             ("path", "content")),
        "Write a text file.", {"path": "string", "content": "string", "append": "boolean"}, ("path", "content"),
        ("Create or overwrite a file; append adds to its end.", "Save text to a file."),
        changes_files=True,
    ),
    ToolSpec(
        "list_directory", "list the files in a folder",
        "List the files and folders in a workspace folder. Folder names end with '/'.",
        _obj({"path": {**_PATH, "description": "Folder relative to the workspace (default '.')."},
              "recursive": {"type": "boolean", "description": "Include sub-folders (default false)."}}),
        "List a folder.", {"path": "string"}, (),
        ("Show the entries of a directory.", "List the files and folders at a path."),
    ),
    ToolSpec(
        "search_files", "search files by name or text",
        "Find files in the workspace by glob pattern (e.g. '*.py') and/or by text they contain.",
        _obj({"pattern": {"type": "string", "minLength": 1, "maxLength": 256,
                          "description": "Glob on file names, or on paths when it contains '/'."},
              "query": {"type": "string", "minLength": 1, "maxLength": 256,
                        "description": "Case-insensitive text to find in file lines."},
              "path": {**_PATH, "description": "Folder to search (default '.')."},
              "max_results": {"type": "integer", "minimum": 1, "maximum": 200}},
             anyOf=[{"required": ["pattern"]}, {"required": ["query"]}]),
        "Find files by name or text.", {"pattern": "string", "query": "string"}, (),
        ("Search file names (pattern) or file contents (query).", "Look for files."),
    ),
    ToolSpec(
        "execute_python", "run a short Python program",
        "Run a Python 3 snippet in a separate process (time and memory limited) and return stdout, stderr "
        "and the exit code. Use print() to show results.",
        _obj({"code": {"type": "string", "minLength": 1, "maxLength": MAX_CODE_CHARS,
                       "description": "Python source code."}}, ("code",)),
        "Run Python code.", {"code": "string"}, ("code",),
        ("Execute a Python snippet and return its output.", "Run a Python program."),
        default=False, changes_files=True,
    ),
    ToolSpec(
        "calculator", "do exact arithmetic",
        "Evaluate an arithmetic expression exactly: + - * / // % ** and parentheses, functions such as "
        "sqrt, sin, cos, tan, log, log10, exp, abs, round, factorial, and constants pi, e.",
        _obj({"expression": {"type": "string", "minLength": 1, "maxLength": MAX_EXPRESSION_CHARS,
                             "description": "For example '2 * (3 + 4) ** 2' or 'sqrt(2) * pi'."}},
             ("expression",)),
        "Evaluate arithmetic.", {"expression": "string"}, ("expression",),
        ("Compute a math expression exactly.", "A calculator for arithmetic expressions."),
    ),
    ToolSpec(
        "analyze_data", "compute statistics of a CSV or JSON table",
        "Summarise a CSV or JSON table in the workspace: rows, columns and statistics (count, mean, std, "
        "min, max, median) of numeric columns, or one operation on one column.",
        _obj({"path": {**_PATH, "description": "CSV, JSON (list of records) or JSON Lines file."},
              "column": {"type": "string", "minLength": 1, "description": "Column to analyse."},
              "operation": {"type": "string", "enum": list(ANALYSIS_OPERATIONS),
                            "description": "One statistic of 'column'."}},
             ("path",)),
        "Statistics of a CSV table.", {"path": "string", "column": "string", "operation": "string"}, ("path",),
        ("Compute a statistic of one column of a CSV file.", "Analyze tabular data."),
    ),
    ToolSpec(
        "query_knowledge_base", "look things up in my local knowledge base",
        "Search Codette's local knowledge base (about Codette, its perspectives and tools) and return the "
        "best matching entries.",
        _obj({"query": {"type": "string", "minLength": 1, "maxLength": 500, "description": "What to look for."},
              "top_k": {"type": "integer", "minimum": 1, "maximum": 10,
                        "description": "How many results (default 3)."}},
             ("query",)),
        "Search the knowledge base.", {"query": "string", "top_k": "integer"}, ("query",),
        ("Look up entries in the local knowledge base.", "Knowledge base search."),
    ),
    ToolSpec(
        "http_request", "call an allowed local web service",
        "Send an HTTP GET or POST request to an allowed host and return the status, headers and body.",
        _obj({"url": {"type": "string", "minLength": 1, "maxLength": 2048, "description": "http(s) URL."},
              "method": {"type": "string", "enum": ["GET", "POST"], "description": "Default GET."},
              "params": {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean"]},
                         "description": "Query parameters."},
              "headers": {"type": "object", "additionalProperties": {"type": "string"}},
              "body": {"type": "string", "maxLength": MAX_REQUEST_BODY_CHARS, "description": "Raw body text."},
              "json": {"description": "JSON body (POST)."}},
             ("url",)),
        "HTTP GET to a local service.", {"url": "string", "params": "object"}, ("url",),
        ("Send a GET request to an allowed local URL.", "Fetch a URL from a local service."),
    ),
    ToolSpec(
        "web_search", "search the web (an offline collection unless a local search service is set up)",
        "Search the web and return result titles, URLs and snippets.",
        _obj({"query": {"type": "string", "minLength": 1, "maxLength": 500, "description": "Search terms."},
              "max_results": {"type": "integer", "minimum": 1, "maximum": 10,
                              "description": "How many results (default 5)."}},
             ("query",)),
        "Search the web.", {"query": "string", "max_results": "integer"}, ("query",),
        ("Search an offline web index for pages.", "Find web pages about a topic."),
    ),
    ToolSpec(
        "analyze_image", "describe an image's size and colours",
        "Describe an image file in the workspace: format, size, colour mode, mean colour, dominant colour "
        "and whether it is grayscale.",
        _obj({"path": {**_PATH, "description": "Image path relative to the workspace."}}, ("path",)),
        "Describe an image file.", {"path": "string"}, ("path",),
        ("Report an image's size and colours.", "Look at a picture file and describe it."),
    ),
)}

TOOL_NAMES: tuple[str, ...] = tuple(SPECS)
DEFAULT_TOOLS: tuple[str, ...] = tuple(name for name, spec in SPECS.items() if spec.default)
CHANGES_FILES: frozenset[str] = frozenset(name for name, spec in SPECS.items() if spec.changes_files)


def tool_schema(name: str, required: bool = False) -> dict:
    """The OpenAI-style schema of tool ``name`` as the model sees it (the compact form).

    ``required`` lists are left out unless asked for (about 7 tokens per tool that a small context
    cannot spare); the calls in the data still satisfy the full schema, required arguments included.
    """
    spec = SPECS[name]
    params: dict = {"type": "object",
                    "properties": {k: {"type": t} for k, t in spec.compact_parameters.items()}}
    if required and spec.compact_required:
        params["required"] = list(spec.compact_required)
    return {"type": "function", "function": {"name": name, "description": spec.compact_description,
                                             "parameters": params}}
