"""A Hugging Face base model's own tokenizer as a :class:`~codette.tokenizer.bpe.CodetteTokenizer`.

A model imported with ``--init-from`` (:mod:`codette.checkpoint.hf`) keeps the tokenizer it was trained
with: its ``tokenizer.json`` is loaded as it is and Codette's special tokens it lacks (``<bos>``,
``<|im_start|>``, ``<|im_end|>``, ``<tool_call>``, ... :data:`~codette.tokenizer.chat_template.SPECIAL_TOKENS`)
are appended as special added tokens, each one id. Tokens it already has (SmolLM2's and Qwen2's
``<|im_start|>``, Qwen2.5's ``<tool_call>``, Llama's ``<unk>``) keep their ids and trained rows. The chat
template is Codette's (the data is rendered with it), not the base model's.

The model then needs an embedding row for every new id: :meth:`HFTokenizer.embedding_rows` says how
many rows the table must have, :func:`codette.checkpoint.hf.grow_vocab` adds them (the mean of the old
rows), and :attr:`HFTokenizer.added_ids` lists the ids to initialise where a table already had unused
padding rows (Qwen2's has).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from tokenizers import AddedToken, Tokenizer

from codette.errors import CodetteError
from codette.tokenizer.bpe import TOKENIZER_FILE, CodetteTokenizer
from codette.tokenizer.chat_template import SPECIAL_TOKENS


@dataclass
class HFTokenizer:
    """A base model's tokenizer with Codette's special tokens: how many tokens it had, which it gained."""

    tokenizer: CodetteTokenizer
    base_tokens: int  # tokens of the base model's tokenizer.json, added tokens included
    added: list[str]  # Codette's special tokens it lacked, now appended in SPECIAL_TOKENS order
    added_ids: list[int]

    def embedding_rows(self, vocab_size: int, multiple: int = 64) -> int:
        """Rows the embedding of a model with ``vocab_size`` rows must have for this tokenizer: ``vocab_size``
        when every id fits, else the tokenizer's size rounded up to ``multiple`` (as Codette pads its own)."""
        n = len(self.tokenizer)
        return vocab_size if n <= vocab_size else multiple * math.ceil(n / multiple)

    def rows_to_grow(self, vocab_size: int, multiple: int = 64) -> int:
        """How many rows :meth:`embedding_rows` adds to a table of ``vocab_size`` (0: none)."""
        return self.embedding_rows(vocab_size, multiple) - vocab_size


def load_hf_tokenizer(folder: Path | str, model_max_length: int = 2048) -> HFTokenizer:
    """The ``tokenizer.json`` of Hugging Face model folder ``folder`` with Codette's special tokens added.

    Truncation and padding stored in the file are switched off (a chat window is cut by the packer, never
    by the tokenizer); the base model's post-processor (Llama's ``<s>``) is never applied, since Codette
    encodes without ``add_special_tokens``.
    """
    folder = Path(folder)
    path = folder / TOKENIZER_FILE
    if not path.is_file():
        raise CodetteError(f"{folder} has no {TOKENIZER_FILE}: the base model's own tokenizer is needed (a slow "
                           f"sentencepiece tokenizer.model alone is not read; save it with a fast tokenizer)")
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises plain Exception subclasses
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CodetteError(f"{path} is not a valid tokenizer file: {first}") from None
    tok.no_truncation()
    tok.no_padding()
    base = tok.get_vocab_size(with_added_tokens=True)
    added = [t for t in SPECIAL_TOKENS if tok.token_to_id(t) is None]
    if added:
        tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in added])
    ids = [tok.token_to_id(t) for t in added]
    if any(i is None for i in ids):  # pragma: no cover - tokenizers always adds a missing token
        raise CodetteError(f"{path}: could not add {added[ids.index(None)]!r}")
    return HFTokenizer(CodetteTokenizer(tok, model_max_length=model_max_length), base, added, [int(i) for i in ids])

