"""Pre-tokenizers: ``gpt2-digits`` splits every digit, and llama.cpp (and Ollama's regex) cut text the same way.

A tokenizer of 500 tokens is trained on rendered conversations with each pre-tokenizer, a random
checkpoint is exported to GGUF with it, and llama.cpp's tokenization is compared with ours token for
token on numbers, decimals, file names, code, unicode, whitespace runs, tool-call JSON and chat renderings.
"""

from __future__ import annotations

import json
import random

import gguf
import pytest
import regex
from tokenizers import Tokenizer, pre_tokenizers

from codette.config import PRE_TOKENIZERS as CONFIG_PRE_TOKENIZERS
from codette.config import build_config
from codette.errors import CodetteError
from codette.export import export_gguf
from codette.export.gguf_vocab import GGUF_PRE_TOKENIZERS, GPT2_DIGITS_REGEX, GPT2_REGEX, OLLAMA_PRETOKENIZER_KEY
from codette.persona import DEFAULT_SYSTEM
from codette.tooltable import tool_schema
from codette.tokenizer import SPECIAL_TOKENS, CodetteTokenizer, render
from codette.tokenizer.bpe import PRE_TOKENIZERS
from codette.tokenizer.build import train_tokenizer
from tests._export_models import random_checkpoint
from tests._runtimes import require

llama_cpp = require("llama_cpp")

TOOLS = [tool_schema(n) for n in ("read_file", "calculator", "list_directory")]
PIECES = [
    "0", "7", "42", "386", "1024", "65535", "999999", "3.14159", "-12.5", "0.001", "1e-6", "1,234,567", "v2.0.1",
    "notes_2.txt", "report-2024-05.csv", "samitor-.csv", "data/run_07/log3.json", "IMG_0042.PNG", "x86_64",
    "def f(x):\n    return x ** 2 + 1\n", "for i in range(10):\n\tprint(i)", "a[0] = b[12]", "0x1F", "#3fa9c2",
    "hello", "Codette", "it's", "we'll", "I'M", "don't", "->", "  ", "   ", "\t", "\n", "\n\n", "\r\n", " \n ",
    "é", "ß", "naïve", "Ωμέγα", "Кириллица", "漢字", "ひらがな", "한국어", "😀", "👍🏽", "e\u0301", "\u00a0", "\u3000",
    "٣٤٥", "۱۲", "①②", "½", "²", "Ⅻ", "〇", "𝟙𝟚", "߀߁", "፩", "ｶﾀｶﾅ", "∑∫", "<tag>", "@#$%^&*()", "`", "\\", "'s",
    "'", '"', "\x00", "<|im", "end|>", "<tool", "_call>",
    '{"name": "calculator", "arguments": {"expression": "386 * 27"}}',
    '{"name": "read_file", "arguments": {"path": "report-2024-05.csv"}}',
]


def _parity_strings(conversations: list[str]) -> list[str]:
    rng = random.Random(0)
    texts = list(SPECIAL_TOKENS) + conversations
    texts += [str(rng.randint(0, 10 ** d - 1)).zfill(rng.choice([1, d])) for d in range(1, 7) for _ in range(20)]
    texts += [f"{rng.uniform(-1000, 1000):.{rng.randint(1, 4)}f}" for _ in range(40)]
    for value in ("386", "samitor-42.csv", "notes_2.txt", "report-2024-05.csv", "12.75 / 3"):
        texts += [f"Read {value}", f"What is {value}?", json.dumps({"path": value}), f"  {value}\n", f"({value})"]
    while len(texts) < 1000:
        pool = PIECES + SPECIAL_TOKENS if rng.random() < 0.3 else PIECES
        texts.append(rng.choice(["", " ", "\n", "  ", "\t"]).join(rng.choice(pool) for _ in range(rng.randint(1, 10))))
    return texts


@pytest.fixture(scope="module")
def renderings(samples) -> list[str]:
    """Rendered conversations: the synthetic ones, and requests with the three tools as the agent sends them."""
    texts = [render(s.messages, s.tools) for s in samples]
    calls = (("Read report-2024-05.csv", {"name": "read_file", "arguments": {"path": "report-2024-05.csv"}}),
             ("What is 386 * 27?", {"name": "calculator", "arguments": {"expression": "386 * 27"}}))
    for request, call in calls:
        texts.append(render([{"role": "system", "content": DEFAULT_SYSTEM}, {"role": "user", "content": request},
                             {"role": "assistant", "content": None, "tool_calls": [{"function": call}]}], TOOLS))
    return texts


# Indented code in the training texts gives the vocabulary whitespace-run tokens ("ĠĠĠ"), the tokens
# a wrong pre-tokenizer name would cut differently before a digit (see the control test below).
CODE = ["def f(x):\n    return x ** 2 + 1\n", "if a:\n        b = 386\n    c = [1, 2]\n", "x  =  7\n\n\n  y = 42"] * 30


def _train_and_export(name: str, texts: list[str], folder) -> tuple[CodetteTokenizer, object]:
    cfg = build_config(None, {"tokenizer.vocab_size": 500, "tokenizer.pre_tokenizer": name}).tokenizer
    tok = train_tokenizer(texts, cfg, folder, model_max_length=128)
    ckpt = random_checkpoint(folder / "model", folder, n_layers=1)
    return tok, export_gguf(ckpt, folder / "gguf", "f32", modelfile=False)


@pytest.fixture(scope="module")
def tokenizers(renderings, tmp_path_factory) -> dict[str, tuple[CodetteTokenizer, object]]:
    """Each pre-tokenizer: (our 500-token tokenizer, its GGUF written from a random checkpoint)."""
    return {name: _train_and_export(name, renderings + CODE, tmp_path_factory.mktemp(f"tok_{name}"))
            for name in PRE_TOKENIZERS}


def test_the_names_agree_everywhere() -> None:
    assert CONFIG_PRE_TOKENIZERS == PRE_TOKENIZERS == tuple(GGUF_PRE_TOKENIZERS)
    assert build_config().tokenizer.pre_tokenizer == "gpt2"  # the default is unchanged


def test_a_bad_pre_tokenizer_is_refused_by_name() -> None:
    with pytest.raises(CodetteError, match=r"'tokenizer.pre_tokenizer': expected gpt2 \| gpt2-digits, got 'llama3'"):
        build_config(None, {"tokenizer.pre_tokenizer": "llama3"})
    with pytest.raises(CodetteError, match="unknown pre-tokenizer 'bert'; choose one of: gpt2 | gpt2-digits"):
        CodetteTokenizer.train(["abc"], vocab_size=400, pre_tokenizer="bert")


@pytest.mark.parametrize("name", PRE_TOKENIZERS)
def test_gguf_names_the_pre_tokenizer(tokenizers, name) -> None:
    tok, exported = tokenizers[name]
    assert CodetteTokenizer.load(exported.path.parent.parent).pre_tokenizer == name == tok.pre_tokenizer
    fields = gguf.GGUFReader(exported.path).fields
    pre, ollama_regex = GGUF_PRE_TOKENIZERS[name]
    assert fields["tokenizer.ggml.pre"].contents() == pre == {"gpt2": "gpt-2", "gpt2-digits": "starcoder"}[name]
    assert fields[OLLAMA_PRETOKENIZER_KEY].contents() == ollama_regex


def test_digits_are_single_tokens(tokenizers, renderings) -> None:
    tok = tokenizers["gpt2-digits"][0]
    texts = renderings + _parity_strings([])
    digits = 0
    for text in texts:
        ids, offsets = tok.encode_with_offsets(text)
        for start, end in offsets:
            piece = text[start:end]
            if any(c.isdigit() for c in piece):
                assert len(piece) == 1, f"{piece!r} in {text!r}"
                digits += 1
    assert digits > 2000
    # today's pre-tokenizer keeps a number whole, with the space before it
    old = tokenizers["gpt2"][0]
    assert [old.tok.id_to_token(i) for i in old.tok.encode(" 386", add_special_tokens=False).ids] != \
        [old.tok.id_to_token(i) for i in old.tok.encode("386", add_special_tokens=False).ids]


def test_a_number_has_the_same_tokens_in_the_request_and_in_the_call(tokenizers) -> None:
    tok = tokenizers["gpt2-digits"][0]
    for value in ("386", "1024", "65535 + 7", "12.75"):
        number = tok.encode(value)
        for context in (f"What is {value}?", f'{{"expression": "{value}"}}', f"x={value}", f"({value})"):
            ids = tok.encode(context)
            assert any(ids[i:i + len(number)] == number for i in range(len(ids))), (value, context)


@pytest.mark.parametrize("name", PRE_TOKENIZERS)
def test_llama_cpp_tokenizes_exactly_like_us(tokenizers, renderings, name) -> None:
    tok, exported = tokenizers[name]
    texts = _parity_strings(renderings)
    llm = llama_cpp.Llama(str(exported.path), vocab_only=True, verbose=False)
    try:
        for text in texts:
            ours = tok.encode(text)
            theirs = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
            assert theirs == ours, f"{name}: tokenization differs for {text!r}"
            assert llm.detokenize(theirs, special=True).decode("utf-8") == text
    finally:
        llm.close()


def test_the_parity_check_catches_a_wrong_pre_tokenizer_name(renderings, tmp_path, monkeypatch) -> None:
    """Control: a digit-splitting tokenizer exported as "gpt-2" is cut differently by llama.cpp."""
    monkeypatch.setitem(GGUF_PRE_TOKENIZERS, "gpt2-digits", ("gpt-2", GPT2_REGEX))
    tok, exported = _train_and_export("gpt2-digits", renderings + CODE, tmp_path)
    llm = llama_cpp.Llama(str(exported.path), vocab_only=True, verbose=False)
    try:
        texts = _parity_strings([])
        differ = [t for t in texts if llm.tokenize(t.encode(), add_bos=False, special=True) != tok.encode(t)]
    finally:
        llm.close()
    assert len(differ) > 20


@pytest.mark.parametrize(("name", "pattern"), [("gpt2", GPT2_REGEX), ("gpt2-digits", GPT2_DIGITS_REGEX)],
                         ids=["gpt2", "gpt2-digits"])
def test_ollamas_one_regex_cuts_like_our_pre_tokenizer(name, pattern, renderings) -> None:
    """Ollama's Go engine splits with one regex, then maps bytes; it must give our pre-tokenizer's pieces."""
    from codette.tokenizer.bpe import _PRE_TOKENIZERS

    ours = _PRE_TOKENIZERS[name]()
    to_bytes = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    rng = random.Random(1)
    alphabet = list("ab Z'sdtlmrve 0123456789\t\n\r.,-_\"{}:é٣²½Ⅻ①\u00a0\u3000漢😀") + ["  ", "'s", "'ll"]
    texts = _parity_strings(renderings[:20])
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 14))) for _ in range(5000)]
    for text in texts:
        expected = [p for p, _ in ours.pre_tokenize_str(text)]
        got = [to_bytes.pre_tokenize_str(m)[0][0] for m in regex.findall(pattern, text)]
        assert got == expected, f"{name}: {text!r}"


def test_export_refuses_a_pre_tokenizer_llama_cpp_would_not_match(tokenizers, tmp_path) -> None:
    tok = tokenizers["gpt2"][0]
    changed = CodetteTokenizer(Tokenizer.from_str(tok.tok.to_str()))
    changed.tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True)
    changed.save(tmp_path)
    ckpt = random_checkpoint(tmp_path / "model", tmp_path, n_layers=1)
    with pytest.raises(CodetteError, match=r"tokenizer.json: pre-tokenizer \{\"type\": \"ByteLevel\", "
                                           r"\"add_prefix_space\": true, .* has no llama.cpp equivalent; GGUF export "
                                           r"recognises GPT-2's byte-level regex \(gpt-2\), digits then GPT-2's regex "
                                           r"\(starcoder\), "):
        export_gguf(ckpt, tmp_path / "gguf", "f32", modelfile=False)
    assert not (tmp_path / "gguf").exists() or not any((tmp_path / "gguf").iterdir())
