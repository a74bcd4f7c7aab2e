"""Sampling from a :class:`CodetteModel`, with or without a KV cache.

Greedy decoding with the cache gives exactly the tokens of greedy decoding without it (tested);
the cache only saves recomputing the prefix. Only the last position is projected to the vocabulary.

The embedding table has more rows than the tokenizer has tokens (``padded_vocab``); the rows past
the tokenizer are never sampled when ``vocab_size`` says where the real vocabulary ends.

The knobs come as plain arguments: their checked form, ``SamplingConfig``, lives with the backends
(an agent talking to an HTTP server must not load torch for it), and the local backend unpacks it here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from codette.model.transformer import CodetteModel


def filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Mask logits outside the top-k set and outside the smallest nucleus with mass >= top_p."""
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1, None]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = sorted_logits.softmax(-1)
        # Drop a token when the mass before it already reaches top_p (the top token always stays).
        drop = probs.cumsum(-1) - probs >= top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return logits


def _pick(logits: torch.Tensor, temperature: float, top_k: int, top_p: float, gen: torch.Generator | None) -> int:
    if temperature <= 0:
        return int(logits.argmax(-1))
    logits = filter_logits(logits / temperature, top_k, top_p)
    probs = logits.float().softmax(-1)
    return int(torch.multinomial(probs, 1, generator=gen))


@torch.no_grad()
def generate_tokens(
    model: CodetteModel,
    prompt: Sequence[int],
    *,
    max_new_tokens: int,
    temperature: float,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int | None = None,
    stop_ids: Sequence[int] = (),
    use_cache: bool = True,
    vocab_size: int | None = None,
) -> Iterator[int]:
    """Yield new token ids one at a time until a stop id (not yielded), max_new_tokens or the context end.

    ``temperature`` 0 is greedy; ``top_k`` 0 and ``top_p`` 1 are off; a ``seed`` makes sampling repeatable.
    ``vocab_size`` is the tokenizer's real size: ids at or past it (embedding padding rows) are never
    returned. None allows every row. The model decodes in eval mode and is put back in the mode it
    was in when the generator finishes or is closed.
    """
    ids = list(prompt)
    if not ids:
        raise ValueError("prompt must contain at least one token")
    max_len = model.cfg.max_seq_len
    if len(ids) >= max_len:
        raise ValueError(f"prompt has {len(ids)} tokens; the model's context is {max_len}")
    n_real = model.cfg.vocab_size if vocab_size is None else vocab_size
    if not 0 < n_real <= model.cfg.vocab_size:
        raise ValueError(f"vocab_size={vocab_size} must be in 1..{model.cfg.vocab_size} (the model's rows)")
    device = model.embed.weight.device
    gen = None
    if seed is not None:
        gen = torch.Generator(device="cpu").manual_seed(seed)
    stops = set(stop_ids)
    was_training = model.training
    model.eval()
    try:
        cache = model.new_cache(1) if use_cache else None
        feed = ids
        for _ in range(max_new_tokens):
            if len(ids) >= max_len:
                return
            if cache is not None:
                logits = model(torch.tensor([feed], device=device), cache=cache, last_only=True)[0, -1]
            else:
                logits = model(torch.tensor([ids], device=device), last_only=True)[0, -1]
            # Padding rows are cut off before sampling: they cannot be picked, greedy or not.
            nxt = _pick(logits[:n_real].float().cpu(), temperature, top_k, top_p, gen)
            if nxt in stops:
                return
            yield nxt
            ids.append(nxt)
            feed = [nxt]
    finally:
        model.train(was_training)
