"""The tokenizer as GGUF metadata, so llama.cpp and Ollama tokenize exactly like Codette.

Facts taken from llama.cpp (``src/llama-vocab.cpp``): ``tokenizer.ggml.model = "gpt2"`` selects the
byte-level BPE, and ``tokenizer.ggml.pre`` its pre-tokenizer by name: each name is a fixed list of
regexes, and a few names also take a whole word that is in the vocabulary as one token without
applying merges (``ignore_merges``). The name is decided from the tokenizer's own ``tokenizer.json``:
its ``pre_tokenizer`` object (``trim_offsets``, which only moves offsets, aside) and its model's
``ignore_merges`` must be those of one of these, or nothing is written.

Codette's own pre-tokenizers (:data:`codette.tokenizer.bpe.PRE_TOKENIZERS`), :data:`GGUF_PRE_TOKENIZERS`:

- ``gpt2`` -> ``"gpt-2"``: GPT-2's regex
  ``'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)``, the one Hugging
  Face's ``ByteLevel(use_regex=True)`` uses. A GPT-2-style base model's tokenizer has the same object.
- ``gpt2-digits`` -> ``"starcoder"``: first ``\\p{N}`` (every digit its own piece), then GPT-2's regex on
  what is left; StarCoder's tokenizer.json is ``Sequence([Digits(individual_digits=True), ByteLevel])``,
  and so is SmolLM2's (llama.cpp's ``"smollm"`` runs the same two regexes).

Base models' pre-tokenizers, :data:`BASE_PRE_TOKENIZERS`: ``Sequence([Split(REGEX, "isolated"),
ByteLevel(use_regex=False)])`` with the regex llama.cpp's name runs (quoted in llama-vocab.cpp as the
"original regex from tokenizer.json"):

- Llama 3's regex (``\\p{N}{1,3}``, ``ignore_merges`` true) -> ``"llama-bpe"``;
- Qwen2's regex (``\\p{N}``, ``ignore_merges`` false) -> ``"qwen2"``.

The model must be a byte-level BPE (no ``byte_fallback``, no sub-word prefix or suffix: SentencePiece-
style Llama 2, TinyLlama and Mistral tokenizers are refused) with a ``ByteLevel`` decoder and no
normalizer, or Qwen2's ``NFC`` (llama.cpp does not normalize, as its own Qwen2 conversion: text already
in NFC, nearly all text, tokenizes the same).

Normal tokens are stored in their byte-level form (``Ġthe``), added tokens as plain text: Codette's
control tokens and the base model's other special added tokens as CONTROL, Codette's markers and the
base model's non-special added tokens as USER_DEFINED (llama.cpp, like Hugging Face, matches both
before cutting the text). Ollama bundles llama.cpp (``llama/llama.cpp/src/llama-vocab.cpp``, which
knows these names), but its own Go engine ignores ``tokenizer.ggml.pre`` and reads one regex from
``tokenizer.ggml.pretokenizer`` (defaulting to Llama 3's), so the one regex that cuts text like each
pre-tokenizer is written there too. For ``gpt2-digits`` that is GPT-2's with ``\\p{N}`` for
`` ?\\p{N}+`` and ``\\s+(?=\\p{N})`` so a run of spaces before a digit stays whole, as it does when the
digits are split off first; for the Split pre-tokenizers it is their own regex.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache

import gguf
from tokenizers import Regex, pre_tokenizers

from codette.errors import CodetteError
from codette.tokenizer import CodetteTokenizer
from codette.tokenizer.bpe import pre_tokenizer_spec, spec_of
from codette.tokenizer.chat_template import BOS, CONTROL_TOKENS, IM_END, MARKER_TOKENS, PAD, UNK

GPT2_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
GPT2_DIGITS_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+|\s+(?=\p{N})|\s+(?!\S)|\s+"
LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")
# Codette pre-tokenizer -> (llama.cpp's tokenizer.ggml.pre, the one regex for Ollama's Go engine)
GGUF_PRE_TOKENIZERS: dict[str, tuple[str, str]] = {
    "gpt2": ("gpt-2", GPT2_REGEX),
    "gpt2-digits": ("starcoder", GPT2_DIGITS_REGEX),
}


@dataclass(frozen=True)
class SplitPreTokenizer:
    """A base model's ``Sequence([Split(regex, "isolated"), ByteLevel(use_regex=False)])`` and its llama.cpp name."""

    pre: str  # tokenizer.ggml.pre
    regex: str  # the Split regex, also Ollama's
    ignore_merges: bool  # llama.cpp's setting for ``pre``; the tokenizer's model must have the same
    models: str  # who uses it (for the docs and errors)


BASE_PRE_TOKENIZERS: tuple[SplitPreTokenizer, ...] = (
    SplitPreTokenizer("llama-bpe", LLAMA3_REGEX, True, "Llama 3"),
    SplitPreTokenizer("qwen2", QWEN2_REGEX, False, "Qwen2"),
)
OLLAMA_PRETOKENIZER_KEY = "tokenizer.ggml.pretokenizer"
_NORMALIZERS = (None, "NFC")  # llama.cpp normalizes nothing; NFC changes only text not already in NFC


@dataclass(frozen=True)
class GGUFPreTokenizer:
    """What the GGUF says about cutting text: llama.cpp's name and Ollama's one regex."""

    pre: str
    regex: str


@dataclass(frozen=True)
class GGUFVocab:
    """Everything :func:`add_tokenizer_metadata` writes, computed (and checked) before a file is opened."""

    pre: GGUFPreTokenizer
    tokens: list[str]
    types: list[int]
    merges: list[str]
    bos: int
    eos: int
    pad: int
    unk: int
    chat_template: str


def _without_trim_offsets(spec: object) -> object:
    """``spec`` with every ``trim_offsets`` key dropped (it moves offsets, never a cut)."""
    if isinstance(spec, dict):
        return {k: _without_trim_offsets(v) for k, v in spec.items() if k != "trim_offsets"}
    if isinstance(spec, list):
        return [_without_trim_offsets(v) for v in spec]
    return spec


def _key(spec: object) -> str:
    return json.dumps(_without_trim_offsets(spec), sort_keys=True)


@lru_cache(maxsize=None)
def _codette_key(name: str) -> str:
    """The canonical pre_tokenizer object of Codette's pre-tokenizer ``name``."""
    return _key(pre_tokenizer_spec(name))


@lru_cache(maxsize=None)
def _split_key(regex: str) -> str:
    """The canonical ``Sequence([Split(regex, "isolated"), ByteLevel(use_regex=False)])`` object."""
    return _key(spec_of(pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])))


def known_pre_tokenizers() -> str:
    """The pre-tokenizers GGUF export recognises, for messages and docs."""
    codette = {"gpt2": "GPT-2's byte-level regex", "gpt2-digits": "digits then GPT-2's regex"}
    return ", ".join([f"{codette.get(n, n)} ({GGUF_PRE_TOKENIZERS[n][0]})" for n in GGUF_PRE_TOKENIZERS]
                     + [f"{b.models}'s Split regex with ignore_merges {str(b.ignore_merges).lower()} ({b.pre})"
                        for b in BASE_PRE_TOKENIZERS])


def _short(value: object, limit: int = 160) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def gguf_pre_tokenizer(spec: dict) -> GGUFPreTokenizer:
    """llama.cpp's name and Ollama's regex for the tokenizer.json ``spec`` (a dict, as the library writes it).

    Everything that changes how text becomes ids is checked: the model (byte-level BPE), its
    ``ignore_merges``, the normalizer, the decoder and the pre-tokenizer. Anything llama.cpp would cut
    or merge differently is one CodetteError line naming it; nothing is ever written under a near name.
    """
    model = spec.get("model") or {}
    if model.get("type") != "BPE":
        raise CodetteError(f"the tokenizer's model is {model.get('type')!r}, not a byte-level BPE; GGUF export writes "
                           f"byte-level BPE tokenizers only (llama.cpp's 'gpt2' model)")
    for key in ("byte_fallback", "continuing_subword_prefix", "end_of_word_suffix", "dropout"):
        if model.get(key):
            raise CodetteError(f"the tokenizer's BPE has {key} {model[key]!r} (a SentencePiece-style or sub-word "
                               f"BPE); GGUF export writes byte-level BPE tokenizers only; use --format hf")
    normalizer = (spec.get("normalizer") or {}).get("type")
    if normalizer not in _NORMALIZERS:
        raise CodetteError(f"the tokenizer's normalizer {_short(spec.get('normalizer'), 100)} has no llama.cpp "
                           f"equivalent (GGUF export takes none, or NFC); use --format hf")
    decoder = (spec.get("decoder") or {}).get("type")
    if decoder != "ByteLevel":
        raise CodetteError(f"the tokenizer's decoder is {decoder!r}, not ByteLevel; GGUF export writes byte-level "
                           f"BPE tokenizers only; use --format hf")
    pre = spec.get("pre_tokenizer")
    ignore_merges = bool(model.get("ignore_merges", False))
    key = _key(pre)
    for name, (gguf_name, regex) in GGUF_PRE_TOKENIZERS.items():  # llama.cpp's names for these apply merges
        if key == _codette_key(name) and not ignore_merges:
            return GGUFPreTokenizer(gguf_name, regex)
    for base in BASE_PRE_TOKENIZERS:
        if key == _split_key(base.regex) and ignore_merges == base.ignore_merges:
            return GGUFPreTokenizer(base.pre, base.regex)
    raise CodetteError(f"pre-tokenizer {_short(pre)} with ignore_merges {str(ignore_merges).lower()} has no "
                       f"llama.cpp equivalent; GGUF export recognises {known_pre_tokenizers()}; "
                       f"--format hf writes any tokenizer")


def _token_types(spec: dict) -> dict[str, int]:
    """Added tokens by their text: CONTROL or USER_DEFINED (Codette's lists first, then ``special``)."""
    control, markers = set(CONTROL_TOKENS), set(MARKER_TOKENS)
    types = {}
    for added in spec.get("added_tokens") or []:
        text = added["content"]
        for flag in ("lstrip", "rstrip", "single_word"):
            if added.get(flag):
                raise CodetteError(f"added token {text!r} has {flag} set; llama.cpp's GGUF vocabulary cannot "
                                   f"express it, so it would tokenize differently; use --format hf")
        if text in control:
            types[text] = gguf.TokenType.CONTROL
        elif text in markers:
            types[text] = gguf.TokenType.USER_DEFINED
        else:
            types[text] = gguf.TokenType.CONTROL if added.get("special") else gguf.TokenType.USER_DEFINED
    return types


def gguf_vocab(tok: CodetteTokenizer, n_rows: int) -> GGUFVocab:
    """The tokenizer as GGUF tables: tokens, types and merges; rows past its size become UNUSED ``[PADn]``."""
    spec = json.loads(tok.tok.to_str())
    pre = gguf_pre_tokenizer(spec)
    vocab = tok.tok.get_vocab(with_added_tokens=True)
    by_id = {i: t for t, i in vocab.items()}
    if len(by_id) != len(vocab) or sorted(by_id) != list(range(len(by_id))):
        raise CodetteError("tokenizer ids are not contiguous from 0; cannot write a GGUF vocabulary")
    added = _token_types(spec)
    tokens, types = [], []
    for i in range(n_rows):
        t = by_id.get(i)
        if t is None:
            tokens.append(f"[PAD{i}]")
            types.append(int(gguf.TokenType.UNUSED))
        else:
            tokens.append(t)
            types.append(int(added.get(t, gguf.TokenType.NORMAL)))
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"].get("merges", [])]
    return GGUFVocab(pre=pre, tokens=tokens, types=types, merges=merges, bos=tok.token_id(BOS),
                     eos=tok.token_id(IM_END), pad=tok.token_id(PAD), unk=tok.token_id(UNK),
                     chat_template=tok.chat_template)


def add_tokenizer_metadata(writer: gguf.GGUFWriter, vocab: GGUFVocab) -> None:
    """Vocabulary, merges, special ids and the chat template (the template writes ``<bos>`` itself)."""
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(vocab.pre.pre)
    writer.add_string(OLLAMA_PRETOKENIZER_KEY, vocab.pre.regex)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.types)
    writer.add_token_merges(vocab.merges)
    writer.add_bos_token_id(vocab.bos)
    # Generation ends with the assistant turn; <eos> (end of document) stays CONTROL and the Modelfile
    # lists it as a stop string.
    writer.add_eos_token_id(vocab.eos)
    writer.add_eot_token_id(vocab.eos)
    writer.add_pad_token_id(vocab.pad)
    writer.add_unk_token_id(vocab.unk)
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)
    writer.add_chat_template(vocab.chat_template)
