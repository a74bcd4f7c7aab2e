"""The tokenizer stage: learn a byte-level BPE from the training split and save it."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from codette.config import TokenizerConfig
from codette.tokenizer.bpe import CodetteTokenizer


def train_tokenizer(texts: Iterable[str], cfg: TokenizerConfig, out_dir: Path | str,
                    model_max_length: int = 2048) -> CodetteTokenizer:
    tok = CodetteTokenizer.train(texts, cfg.vocab_size, cfg.min_frequency, cfg.pre_tokenizer)
    tok.model_max_length = model_max_length
    tok.save(out_dir)
    return tok
