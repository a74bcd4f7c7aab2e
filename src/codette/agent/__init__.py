"""The Codette agent: the model, its tools and the loop between them (:class:`MultimodalCodette`)."""

from codette.agent.context import ContextOverflow
from codette.agent.core import MultimodalCodette, default_tools
from codette.agent.loop import Event, LoopConfig
from codette.agent.response import Response, ToolCallRecord

__all__ = ["ContextOverflow", "Event", "LoopConfig", "MultimodalCodette", "Response", "ToolCallRecord",
           "default_tools"]
