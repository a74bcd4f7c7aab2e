"""`codette eval`: held-out language-modelling metrics of a checkpoint plus a few sample chats."""

from __future__ import annotations

from pathlib import Path

from codette.backends.local import LocalBackend
from codette.data.loader import BatchSampler
from codette.data.pack import PackedSplit
from codette.errors import CodetteError
from codette.evaluate.lm import evaluate_lm
from codette.model.generate import SamplingConfig

SAMPLE_PROMPTS = [
    "Who are you?",
    "Explain a lighthouse from the Newton perspective.",
    "What is 144 * 12?",
    "Think about a thunderstorm from several perspectives.",
]


def evaluate_checkpoint(checkpoint: Path | str, packed_dir: Path | str, tokenizer_dir: Path | str | None = None,
                        batch_size: int = 16, max_batches: int | None = None, samples: int = 3,
                        device: str = "cpu") -> dict:
    """Metrics over the whole val split (or ``max_batches``) and ``samples`` greedy sample chats."""
    backend = LocalBackend(checkpoint, tokenizer_dir, device)
    val = PackedSplit(packed_dir, "val")
    if int(val.meta["vocab_size"]) != len(backend.tokenizer):
        raise CodetteError(f"{packed_dir} was packed with a {val.meta['vocab_size']}-token tokenizer, "
                           f"but the checkpoint's tokenizer has {len(backend.tokenizer)}")
    seq_len = backend.model.cfg.max_seq_len
    sampler = BatchSampler(val, seq_len, seed=0)
    m = evaluate_lm(backend.model, sampler.sequential(batch_size, max_batches), device)
    chats = []
    for prompt in SAMPLE_PROMPTS[:samples]:
        reply = backend.chat([{"role": "user", "content": prompt}],
                             sampling=SamplingConfig(max_new_tokens=96, temperature=0.0))
        chats.append({"user": prompt, "assistant": reply})
    return {"checkpoint": str(checkpoint), "step": backend.step, "val_loss": m.val_loss,
            "val_perplexity": m.perplexity, "val_token_accuracy": m.token_accuracy, "val_tokens": m.tokens,
            "samples": chats}
