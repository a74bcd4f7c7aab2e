"""Byte-level BPE tokenizer and the single chat template every stage derives from."""

from codette.tokenizer.bpe import CodetteTokenizer
from codette.tokenizer.chat_template import CHAT_TEMPLATE, CONTROL_TOKENS, MARKER_TOKENS, SPECIAL_TOKENS, render

__all__ = ["CHAT_TEMPLATE", "CONTROL_TOKENS", "MARKER_TOKENS", "SPECIAL_TOKENS", "CodetteTokenizer", "render"]
