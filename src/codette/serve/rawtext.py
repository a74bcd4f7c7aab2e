"""Routes on raw text, with no chat template: OpenAI's legacy ``POST /v1/completions`` and llama-server's
``POST /tokenize`` and ``POST /detokenize``.

A text completion continues the prompt exactly as written (special tokens written in it become their
ids), so a client can render its own template or complete plain text. It needs the backend's
tokenizer (``tokenize`` and ``stream_tokens``: the checkpoint and GGUF backends); over an upstream
HTTP server these routes answer 501. ``logprobs`` is accepted and answered ``null``: no backend here
reports them. Tokenizing does not wait in the model's queue: it reads only the vocabulary.
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from codette.errors import CodetteError
from codette.serve import completions as oc
from codette.serve.completions import sse
from codette.serve.engine import ServedModel, Timing, stream_failure
from codette.serve.guard import error_body
from codette.serve.schemas import CompletionRequest, DetokenizeRequest, TokenizeRequest


def text_completion(cid: str, model: str, text: str, reason: str | None, use: dict[str, int] | None,
                    chunk: bool = False) -> dict[str, Any]:
    """A ``text_completion`` object (whole, or one streamed piece with ``reason`` None until the last)."""
    return {"id": cid, "object": "text_completion", "created": int(time.time()), "model": model,
            "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": reason}],
            **({} if chunk and use is None else {"usage": use})}


def raw_text_routes(served: ServedModel, model_name: str, default_tokens: int, default_temperature: float) -> APIRouter:
    """The routes above for ``served``; replies are limited to ``default_tokens`` unless a request asks."""
    from codette.backends.base import SamplingConfig

    router = APIRouter()

    def prompt_ids(prompt: str | list[int]) -> list[int]:
        if isinstance(prompt, list):
            served.need("detokenize", "a text completion")(prompt)  # checks the ids are the vocabulary's
            return list(prompt)
        return served.need("tokenize", "a text completion")(prompt)

    @router.post("/v1/completions")
    async def completions(body: CompletionRequest) -> Any:
        stream_tokens = served.need("stream_tokens", "a text completion")
        ids = prompt_ids(body.prompt)
        if not ids:
            raise CodetteError("prompt: the prompt is empty (it must be at least one token)")
        limit = served.reply_limit(len(ids), body.max_tokens, default_tokens, param="prompt")
        sampling = SamplingConfig(max_new_tokens=limit,
                                  temperature=default_temperature if body.temperature is None else body.temperature,
                                  top_p=body.top_p or 1.0, top_k=body.top_k or 0, seed=body.seed)
        timing = Timing()
        echo = (body.prompt if isinstance(body.prompt, str) else served.backend.detokenize(ids)) if body.echo else ""
        cid = oc.new_id("cmpl-")

        def make(_stop: threading.Event) -> Iterator[Any]:
            return stream_tokens(ids, sampling)

        if body.stream:
            served.worker.check_room()
            usage = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(streamed(cid, make, ids, body.stop, echo, usage, timing),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        reply = await served.collect(make, body.stop, timing)
        return text_completion(cid, model_name, echo + reply.text, reply.finish([]), counted(reply, ids))

    def counted(reply: oc.Collected, ids: list[int]) -> dict[str, int] | None:
        """The usage; when a stop sequence ended the generation before the backend's counts came, the prompt's
        are known and the reply's are counted from its text."""
        prompt = reply.prompt_tokens if reply.prompt_tokens is not None else len(ids)
        completion = reply.completion_tokens
        return oc.usage(prompt, completion if completion is not None else served.count_text(reply.text))

    async def streamed(cid: str, make: Any, ids: list[int], stops: list[str] | None, echo: str,
                       usage: bool, timing: Timing) -> AsyncIterator[str]:
        reply = oc.Collected(stops)
        try:
            async with served.generate(make, timing) as pieces:
                if echo:
                    yield sse(text_completion(cid, model_name, echo, None, None, chunk=True))
                async for piece in pieces:
                    text = reply.add(piece)
                    if text:
                        yield sse(text_completion(cid, model_name, text, None, None, chunk=True))
                    if reply.stopped:
                        break
            tail = reply.end()
            yield sse(text_completion(cid, model_name, tail, reply.finish([]), None, chunk=True))
            if usage:
                yield sse({**text_completion(cid, model_name, "", None, counted(reply, ids)), "choices": []})
        except Exception as exc:  # noqa: BLE001 - the headers went out: an error event ends the stream
            message, code = stream_failure(exc)
            yield sse(error_body(message, code, kind="server_error"))
        yield "data: [DONE]\n\n"

    # Plain functions: FastAPI runs them in its thread pool, so a long text never blocks the event loop.
    @router.post("/tokenize")
    def tokenize(body: TokenizeRequest) -> dict[str, Any]:
        ids = served.need("tokenize", "tokenizing")(body.content)
        if not body.with_pieces:
            return {"tokens": ids}
        piece = served.need("detokenize", "tokenizing")
        return {"tokens": [{"id": i, "piece": piece([i])} for i in ids]}

    @router.post("/detokenize")
    def detokenize(body: DetokenizeRequest) -> dict[str, Any]:
        return {"content": served.need("detokenize", "detokenizing")(body.tokens)}

    return router


__all__ = ["raw_text_routes", "text_completion"]
