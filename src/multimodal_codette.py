"""The integration point the Codette specification names: ``from multimodal_codette import MultimodalCodette``.

A thin alias of :mod:`codette.agent`::

    from multimodal_codette import MultimodalCodette

    codette = MultimodalCodette(model_name="codette")
    response = await codette.generate_response(prompt)
"""

from codette.agent import ContextOverflow, Event, MultimodalCodette, Response, ToolCallRecord

__all__ = ["ContextOverflow", "Event", "MultimodalCodette", "Response", "ToolCallRecord"]
