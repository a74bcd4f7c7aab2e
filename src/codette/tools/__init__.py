"""Codette's tools: the 11 tools the agent can call (their table: :mod:`codette.tooltable`), and the one
tool-call text format.

Typical use::

    from codette.tools import Toolbox, parse_tool_calls

    with Toolbox("workspace") as tools:
        system_tools = tools.schemas()                 # for the chat template
        for call in parse_tool_calls(model_text):
            result = tools.run_call(call)              # ToolResult(ok, content, error)
"""

from codette.tools.base import Tool, ToolError, ToolFailure, ToolResult
from codette.tools.calls import (
    TOOL_CALL_CLOSE,
    TOOL_CALL_OPEN,
    ToolCall,
    ToolCallParseError,
    format_tool_call,
    format_tool_calls,
    parse_tool_calls,
    split_tool_calls,
)
from codette.tools.fixture_server import FixtureServer
from codette.tools.knowledge import CODETTE_KNOWLEDGE, KnowledgeBase
from codette.tools.python_exec import ExecutionResult, PythonWorker, run_python_once
from codette.tools.registry import Toolbox, ToolRegistry

__all__ = [
    "CODETTE_KNOWLEDGE", "TOOL_CALL_CLOSE", "TOOL_CALL_OPEN",
    "ExecutionResult", "FixtureServer", "KnowledgeBase", "PythonWorker", "Tool", "ToolCall", "ToolCallParseError",
    "ToolError", "ToolFailure", "ToolRegistry", "ToolResult", "Toolbox",
    "format_tool_call", "format_tool_calls", "parse_tool_calls", "run_python_once", "split_tool_calls",
]
