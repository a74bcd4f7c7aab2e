"""The tokenizer as GGUF metadata, so llama.cpp and Ollama tokenize exactly like Codette.

Facts taken from llama.cpp (``src/llama-vocab.cpp``): ``tokenizer.ggml.model = "gpt2"`` selects the
byte-level BPE, and ``tokenizer.ggml.pre`` its pre-tokenizer by name. Each Codette pre-tokenizer
(:data:`codette.tokenizer.bpe.PRE_TOKENIZERS`) is written as the llama.cpp one that cuts text the same way:

- ``gpt2`` -> ``"gpt-2"``: GPT-2's regex
  ``'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)``, the one Hugging
  Face's ``ByteLevel(use_regex=True)`` uses.
- ``gpt2-digits`` -> ``"starcoder"``: first ``\\p{N}`` (every digit its own piece), then GPT-2's regex on
  what is left; StarCoder's tokenizer.json is ``Sequence([Digits(individual_digits=True), ByteLevel])``.

Normal tokens are stored in their byte-level form (``Ġthe``), special tokens as plain text. Ollama
bundles llama.cpp (``llama/llama.cpp/src/llama-vocab.cpp``, which knows both names), but its own Go
engine ignores ``tokenizer.ggml.pre`` and reads one regex from ``tokenizer.ggml.pretokenizer``
(defaulting to Llama 3's), so the one regex that cuts text like each pre-tokenizer is written there
too. For ``gpt2-digits`` that is GPT-2's with ``\\p{N}`` for `` ?\\p{N}+`` and ``\\s+(?=\\p{N})`` so a
run of spaces before a digit stays whole, as it does when the digits are split off first.
"""

from __future__ import annotations

import json

import gguf

from codette.errors import CodetteError
from codette.tokenizer import CodetteTokenizer
from codette.tokenizer.chat_template import BOS, CONTROL_TOKENS, IM_END, MARKER_TOKENS, PAD, UNK

GPT2_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
GPT2_DIGITS_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+|\s+(?=\p{N})|\s+(?!\S)|\s+"
# Codette pre-tokenizer -> (llama.cpp's tokenizer.ggml.pre, the one regex for Ollama's Go engine)
GGUF_PRE_TOKENIZERS: dict[str, tuple[str, str]] = {
    "gpt2": ("gpt-2", GPT2_REGEX),
    "gpt2-digits": ("starcoder", GPT2_DIGITS_REGEX),
}
OLLAMA_PRETOKENIZER_KEY = "tokenizer.ggml.pretokenizer"


def gguf_pre_tokenizer(tok: CodetteTokenizer) -> tuple[str, str]:
    """(``tokenizer.ggml.pre``, Ollama's regex) for ``tok``; a pre-tokenizer without a llama.cpp twin is refused."""
    try:
        name = tok.pre_tokenizer
    except CodetteError as exc:
        raise CodetteError(f"{exc}; only Codette tokenizers can be written to GGUF") from None
    if name not in GGUF_PRE_TOKENIZERS:
        raise CodetteError(f"pre-tokenizer {name!r} has no llama.cpp equivalent; GGUF export supports: "
                           f"{', '.join(GGUF_PRE_TOKENIZERS)}")
    return GGUF_PRE_TOKENIZERS[name]


def vocab_tables(tok: CodetteTokenizer, n_rows: int) -> tuple[list[str], list[int], list[str]]:
    """Tokens, token types and merges; rows past the tokenizer's size become UNUSED ``[PADn]`` tokens."""
    spec = json.loads(tok.tok.to_str())
    if spec["model"].get("type") != "BPE":
        raise CodetteError("tokenizer.json is not a byte-level BPE; only Codette tokenizers can be written to GGUF")
    gguf_pre_tokenizer(tok)
    vocab = tok.tok.get_vocab(with_added_tokens=True)
    by_id = {i: t for t, i in vocab.items()}
    if len(by_id) != len(vocab) or sorted(by_id) != list(range(len(by_id))):
        raise CodetteError("tokenizer ids are not contiguous from 0; cannot write a GGUF vocabulary")
    control, markers = set(CONTROL_TOKENS), set(MARKER_TOKENS)
    tokens, types = [], []
    for i in range(n_rows):
        t = by_id.get(i)
        if t is None:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        else:
            tokens.append(t)
            types.append(gguf.TokenType.CONTROL if t in control
                         else gguf.TokenType.USER_DEFINED if t in markers else gguf.TokenType.NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"].get("merges", [])]
    return tokens, [int(t) for t in types], merges


def add_tokenizer_metadata(writer: gguf.GGUFWriter, tok: CodetteTokenizer, n_rows: int) -> None:
    """Vocabulary, merges, special ids and the chat template (the template writes ``<bos>`` itself)."""
    tokens, types, merges = vocab_tables(tok, n_rows)
    pre, regex = gguf_pre_tokenizer(tok)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_string(OLLAMA_PRETOKENIZER_KEY, regex)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(tok.token_id(BOS))
    # Generation ends with the assistant turn; <eos> (end of document) stays CONTROL and the Modelfile
    # lists it as a stop string.
    writer.add_eos_token_id(tok.token_id(IM_END))
    writer.add_eot_token_id(tok.token_id(IM_END))
    writer.add_pad_token_id(tok.token_id(PAD))
    writer.add_unk_token_id(tok.token_id(UNK))
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)
    writer.add_chat_template(tok.chat_template)
