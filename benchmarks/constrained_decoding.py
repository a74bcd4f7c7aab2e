"""Decoding speed with and without constraints, on the PyTorch backend (llguidance) and the GGUF backend
(llama.cpp's GBNF), side by side in one process.

The model is untrained (weights do not change the cost of a mask), at the ``tiny`` preset's shape with a
tokenizer trained here on Codette's synthetic data (``--vocab`` tokens), or a run folder's checkpoint
and tokenizer (``--checkpoint``). Three cases, each timed unheld and held, alternating so a busy
machine slows both alike:

* ``free text``: the agent's tools offered, ``tool_choice`` None against "auto" (text until
  ``<tool_call>``, the grammar on watch the whole time);
* ``forced call``: ``tool_choice`` "required" against the same prompt unheld;
* ``schema``: a JSON-schema answer against free text.

Prints completion tokens per second, the added milliseconds per token, and the share of held steps the
grammar masked (both backends let the model pick first and mask only a step whose pick the grammar
refuses: a trained model's steps go unmasked, an untrained model's noise is masked at almost every step
of a call), and the share of held tokens written by the finish (codette.backends.finish: near the reply
limit a call or answer the model would not end in time is closed for it; those tokens need no forward
pass, so a reply with many of them can be faster held than unheld). The reply lengths differ (held
replies end when the grammar does), hence tokens per second, not seconds per reply.

    python benchmarks/constrained_decoding.py                      # about 20 s on a shared 2-core CPU
    python benchmarks/constrained_decoding.py --replies 8 --tokens 128 --vocab 16000
    python benchmarks/constrained_decoding.py --checkpoint codette_model/model_best.pt --replies 12
    python benchmarks/constrained_decoding.py --checkpoint codette_model/model_best.pt --temperature 0
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from codette.backends.base import SamplingConfig
from codette.tooltable import SPECS, tool_schema

TOOLS = ["calculator", "read_file", "list_directory", "write_file", "search_files", "analyze_data"]
SCHEMA = {"type": "object", "properties": {
    "kind": {"enum": ["point", "line", "area"]}, "count": {"type": "integer", "minimum": 0, "maximum": 99},
    "tags": {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 4},
    "origin": {"type": "object", "properties": {"x": {"type": "number"}, "y": {"type": "number"}},
               "required": ["x", "y"]}},
    "required": ["kind", "count", "tags", "origin"]}


def build_model(folder: Path, vocab: int) -> Path:
    """An untrained ``tiny``-shaped checkpoint beside a tokenizer trained on synthetic conversations."""
    import dataclasses

    from codette.checkpoint import save_checkpoint
    from codette.data import synthetic
    from codette.model import CodetteModel
    from codette.model.config import padded_vocab
    from codette.model.presets import preset_config
    from codette.tokenizer import CodetteTokenizer, render

    train, val, _ = synthetic.generate(3000, seed=0)
    tokenizer = CodetteTokenizer.train([render(s.messages, s.tools) for s in train + val], vocab_size=vocab)
    tokenizer.save(folder)
    cfg = dataclasses.replace(preset_config("tiny"), vocab_size=padded_vocab(len(tokenizer)), block_style="llama",
                              extra={"preset": "tiny"})
    torch.manual_seed(0)
    path = folder / "model_random.pt"
    save_checkpoint({"model": CodetteModel(cfg).state_dict(), "model_config": dataclasses.asdict(cfg), "step": 0}, path)
    return path


def rate(backend, messages: list[dict], tools: list[dict] | None,
         sampling: SamplingConfig) -> tuple[int, float, int, int]:
    """Completion tokens, seconds, masked steps and tokens written by the finish of one streamed reply."""
    backend.masked_at, backend.finished_at = [], None
    start = time.perf_counter()
    *_, last = backend.stream(messages, tools, sampling)
    n = last.completion_tokens or 0
    finished = 0 if backend.finished_at is None else n - backend.finished_at
    return n, time.perf_counter() - start, len(backend.masked_at), finished


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, help="a checkpoint with its tokenizer beside it (default: untrained)")
    ap.add_argument("--vocab", type=int, default=8000, help="tokenizer size of the untrained model")
    ap.add_argument("--replies", type=int, default=4, help="timed replies per case and mode (after one warm-up)")
    ap.add_argument("--tokens", type=int, default=64, help="reply limit")
    ap.add_argument("--threads", type=int, default=1, help="torch and llama.cpp threads")
    ap.add_argument("--temperature", type=float, default=1.0, help="0: greedy, as the agent decodes")
    args = ap.parse_args()

    from codette.backends.gguf import GGUFBackend
    from codette.backends.local import LocalBackend
    from codette.export.gguf_export import export_gguf

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint or build_model(Path(tmp), args.vocab)
        gguf = export_gguf(checkpoint, Path(tmp) / "gguf", "f16", modelfile=False).path
        backends = [LocalBackend.from_checkpoint(checkpoint),
                    GGUFBackend(gguf, tokenizer_dir=checkpoint.parent, n_threads=args.threads)]
        shown = [tool_schema(n) for n in TOOLS]
        full = [{"type": "function", "function": {"name": n, "parameters": SPECS[n].parameters}} for n in TOOLS]
        ask = [{"role": "user", "content": "Read notes.txt and add up the numbers in it."}]
        cases = {"free text, tools offered": (shown, {"tool_choice": "auto", "call_schemas": full}),
                 "forced call": (shown, {"tool_choice": "required", "call_schemas": full}),
                 "schema": (None, {"response_format": SCHEMA})}
        print(f"vocabulary {len(backends[0].tokenizer)} tokens, {args.threads} thread(s), {args.replies} replies "
              f"of up to {args.tokens} tokens per cell; temperature {args.temperature:g}")
        print(f"{'backend':8} {'case':26} {'unheld tok/s':>13} {'held tok/s':>11} {'added ms/token':>15} "
              f"{'slower':>7} {'masked':>7} {'finished':>9}")
        for backend in backends:
            for case, (tools, held) in cases.items():
                totals = {False: [0, 0.0, 0, 0], True: [0, 0.0, 0, 0]}
                for i in range(args.replies + 1):
                    for constrained in (False, True):
                        sampling = SamplingConfig(max_new_tokens=args.tokens, temperature=args.temperature, seed=i,
                                                  **(held if constrained else {}))
                        measured = rate(backend, ask, tools, sampling)
                        if i:  # the first round warms caches up (grammar text, llguidance's token table)
                            for k, value in enumerate(measured):
                                totals[constrained][k] += value
                free, bound = (totals[c][0] / totals[c][1] for c in (False, True))
                masked, finished = (totals[True][k] / max(totals[True][0], 1) for k in (2, 3))
                print(f"{backend.name:8} {case:26} {free:13.0f} {bound:11.0f} {1e3 / bound - 1e3 / free:15.2f} "
                      f"{1 - bound / free:7.0%} {masked:7.0%} {finished:9.0%}")
        backends[1].close()


if __name__ == "__main__":
    main()
