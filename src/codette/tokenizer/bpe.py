"""Byte-level BPE tokenizer (Hugging Face ``tokenizers``) plus the chat template.

Byte-level means every UTF-8 string round-trips and nothing maps to ``<unk>``. The pre-tokenizer (how
text is cut before merges are learned) is one of :data:`PRE_TOKENIZERS`: ``gpt2`` is GPT-2's regex
(``Ġ386`` is one piece); ``gpt2-digits`` splits every digit off first, as StarCoder's tokenizer does,
so a number has the same tokens wherever it appears (``386`` is ``3 8 6`` after a space, a quote or a
letter). Both are pre-tokenizers llama.cpp implements exactly (see :mod:`codette.export.gguf_vocab`). Files written:
``tokenizer.json`` (the HF fast-tokenizer file) and ``tokenizer_config.json`` (HF keys: special
tokens, ``chat_template``, ``model_max_length``), so ``transformers.AutoTokenizer`` can load the
folder too.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from codette.errors import CodetteError
from codette.fileio import atomic_write_text
from codette.jsonl import read_json_object
from codette.tokenizer.chat_template import (
    BOS,
    CHAT_TEMPLATE,
    CONTROL_TOKENS,
    EOS,
    IM_END,
    IM_START,
    MARKER_TOKENS,
    PAD,
    SPECIAL_TOKENS,
    UNK,
    assistant_spans,
    render,
)

TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "tokenizer_config.json"
# The layout of what Codette adds to the Hugging Face files (special tokens, chat template). A file
# without the key was written before it existed and is version 1.
FORMAT_KEY = "codette_format_version"
FORMAT_VERSION = 1


def _byte_level() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)


# Each pre-tokenizer by its config name (``tokenizer.pre_tokenizer``; codette.config lists the same names, so
# that reading a config loads no tokenizer library, and a test keeps the two lists equal).
_PRE_TOKENIZERS: dict[str, Callable[[], pre_tokenizers.PreTokenizer]] = {
    "gpt2": _byte_level,
    "gpt2-digits": lambda: pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), _byte_level()]),
}
PRE_TOKENIZERS = tuple(_PRE_TOKENIZERS)


def spec_of(pre: pre_tokenizers.PreTokenizer) -> dict:
    """The ``pre_tokenizer`` object that ``pre`` has in a tokenizer.json."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre
    return json.loads(tok.to_str())["pre_tokenizer"]


def pre_tokenizer_spec(name: str) -> dict:
    """The ``pre_tokenizer`` object that Codette's pre-tokenizer ``name`` has in a tokenizer.json."""
    return spec_of(_PRE_TOKENIZERS[name]())


class CodetteTokenizer:
    """A trained byte-level BPE with Codette's special tokens and chat template."""

    def __init__(self, tok: Tokenizer, chat_template: str = CHAT_TEMPLATE, model_max_length: int = 2048) -> None:
        self.tok = tok
        self.chat_template = chat_template
        self.model_max_length = model_max_length
        missing = [t for t in SPECIAL_TOKENS if tok.token_to_id(t) is None]
        if missing:
            raise CodetteError(f"tokenizer lacks special tokens: {', '.join(missing)}")

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 32768, min_frequency: int = 2,
              pre_tokenizer: str = "gpt2") -> "CodetteTokenizer":
        """Learn merges from ``texts``; special tokens take ids 0..len(SPECIAL_TOKENS)-1."""
        if vocab_size < 256 + len(SPECIAL_TOKENS):
            raise CodetteError(f"vocab_size must be at least {256 + len(SPECIAL_TOKENS)} (bytes + specials)")
        if pre_tokenizer not in _PRE_TOKENIZERS:
            raise CodetteError(f"unknown pre-tokenizer {pre_tokenizer!r}; choose one of: {' | '.join(PRE_TOKENIZERS)}")
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = _PRE_TOKENIZERS[pre_tokenizer]()
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=SPECIAL_TOKENS,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(texts, trainer=trainer)
        return cls(tok)

    @classmethod
    def load(cls, folder: Path | str) -> "CodetteTokenizer":
        folder = Path(folder)
        path = folder / TOKENIZER_FILE
        if not path.is_file():
            raise CodetteError(f"no tokenizer at {path}; train one with `codette tokenizer`")
        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises plain Exception subclasses
            raise CodetteError(f"{path} is not a valid tokenizer file: {exc}") from None
        template, max_len = CHAT_TEMPLATE, 2048
        cfg_path = folder / CONFIG_FILE
        if cfg_path.is_file():
            template, max_len = _read_config(cfg_path, template, max_len)
        return cls(tok, template, max_len)

    def save(self, folder: Path | str) -> None:
        folder = Path(folder)
        atomic_write_text(folder / TOKENIZER_FILE, self.tok.to_str(pretty=False))
        atomic_write_text(folder / CONFIG_FILE, json.dumps(self.hf_config(), indent=2, ensure_ascii=False))

    def hf_config(self) -> dict:
        """``tokenizer_config.json`` in the Hugging Face layout."""
        return {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": BOS,
            "eos_token": IM_END,
            "pad_token": PAD,
            "unk_token": UNK,
            "additional_special_tokens": [t for t in SPECIAL_TOKENS if t not in (BOS, IM_END, PAD, UNK)],
            "add_bos_token": False,
            "add_eos_token": False,
            "clean_up_tokenization_spaces": False,
            "model_max_length": self.model_max_length,
            "chat_template": self.chat_template,
            FORMAT_KEY: FORMAT_VERSION,
        }

    @property
    def pre_tokenizer(self) -> str:
        """The name (in :data:`PRE_TOKENIZERS`) of this tokenizer's pre-tokenizer, read from its spec."""
        spec = json.loads(self.tok.to_str()).get("pre_tokenizer")
        for name in PRE_TOKENIZERS:
            if spec == pre_tokenizer_spec(name):
                return name
        raise CodetteError(f"the tokenizer's pre-tokenizer is none of Codette's ({' | '.join(PRE_TOKENIZERS)}): "
                           f"{json.dumps(spec)[:120]}")

    # ---- ids ----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.tok.get_vocab_size(with_added_tokens=True)

    def token_id(self, token: str) -> int:
        i = self.tok.token_to_id(token)
        if i is None:
            raise CodetteError(f"token {token!r} is not in the vocabulary")
        return i

    @property
    def bos_id(self) -> int:
        return self.token_id(BOS)

    @property
    def eos_id(self) -> int:
        return self.token_id(EOS)

    @property
    def pad_id(self) -> int:
        return self.token_id(PAD)

    @property
    def im_start_id(self) -> int:
        return self.token_id(IM_START)

    @property
    def im_end_id(self) -> int:
        return self.token_id(IM_END)

    @property
    def stop_ids(self) -> list[int]:
        """Generation ends at the end of an assistant turn or of a document."""
        return [self.im_end_id, self.eos_id]

    @property
    def control_ids(self) -> set[int]:
        return {self.token_id(t) for t in CONTROL_TOKENS}

    @property
    def marker_ids(self) -> set[int]:
        return {self.token_id(t) for t in MARKER_TOKENS}

    # ---- text ---------------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        """Token ids for ``text``; special tokens written in the text become their single ids."""
        return self.tok.encode(text, add_special_tokens=False).ids

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        enc = self.tok.encode(text, add_special_tokens=False)
        return enc.ids, enc.offsets

    def decode(self, ids: Sequence[int], skip_control: bool = False) -> str:
        """Text for ``ids``; with ``skip_control`` structure tokens are dropped (markers stay)."""
        if skip_control:
            control = self.control_ids
            ids = [i for i in ids if i not in control]
        return self.tok.decode(list(ids), skip_special_tokens=False)

    # ---- chat ---------------------------------------------------------------------------------
    def apply_chat_template(
        self, messages: list[dict], tools: list[dict] | None = None, add_generation_prompt: bool = False
    ) -> str:
        return render(messages, tools, add_generation_prompt, template=self.chat_template)

    def encode_chat(self, messages: list[dict], tools: list[dict] | None = None) -> tuple[list[int], list[int]]:
        """Ids of the rendered conversation and a 0/1 mask marking tokens inside assistant turns."""
        text, spans = assistant_spans(messages, tools)
        ids, offsets = self.encode_with_offsets(text)
        mask = [0] * len(ids)
        j = 0
        for k, (start, _end) in enumerate(offsets):
            while j < len(spans) and spans[j][1] <= start:
                j += 1
            if j < len(spans) and spans[j][0] <= start < spans[j][1]:
                mask[k] = 1
        return ids, mask


def _read_config(path: Path, template: str, max_len: int) -> tuple[str, int]:
    """``chat_template`` and ``model_max_length`` of a tokenizer_config.json, each checked by name."""
    cfg = read_json_object(path)
    version = cfg.get(FORMAT_KEY, 1)
    if version != FORMAT_VERSION:
        raise CodetteError(f"{path}: '{FORMAT_KEY}' is {version!r}; this version of Codette reads format version "
                           f"{FORMAT_VERSION} (the tokenizer was written by another version)")
    template = cfg.get("chat_template", template)
    if not isinstance(template, str) or not template.strip():
        raise CodetteError(f"{path}: 'chat_template' must be a Jinja template string, got {template!r:.60}")
    max_len = cfg.get("model_max_length", max_len)
    if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len <= 0:
        raise CodetteError(f"{path}: 'model_max_length' must be a positive integer, got {max_len!r:.60}")
    try:  # a template that cannot render a plain exchange (or never finishes) fails here, naming the file
        render([{"role": "system", "content": "s"}, {"role": "user", "content": "u"}], add_generation_prompt=True,
               template=template)
    except CodetteError as exc:
        raise CodetteError(f"{path}: 'chat_template' {exc}") from None
    return template, max_len
