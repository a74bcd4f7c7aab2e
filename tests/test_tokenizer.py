"""The byte-level BPE tokenizer and the chat template: lossless round trips, special tokens, masks, files."""

from __future__ import annotations

import json
import random
import string
from pathlib import Path

import pytest

from codette.errors import CodetteError
from codette.tokenizer import CHAT_TEMPLATE, SPECIAL_TOKENS, CodetteTokenizer, render
from codette.tokenizer.chat_template import UNK

# ------------------------------------------------------------------------------------------------
# Random unicode strings
# ------------------------------------------------------------------------------------------------
EMOJI = ["😀", "🤖", "👍🏽", "❤️", "👩‍💻", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🧑🏿‍🚀", "🇫🇷", "🇯🇵", "🇺🇦", "1️⃣", "🫠"]
CODE = [
    "def f(x):\n\treturn x ** 2  # square\n",
    "for (int i = 0; i < n; ++i) { a[i] = i >> 1; }",
    '{"k": [1, 2.5e-3, null], "s": "a\\"b"}',
    '<div class="x">&amp;&lt;</div>',
    "SELECT * FROM t WHERE a <> 'b';",
    "    if x:\r\n        pass\r\n",
    "λx. x → ∀y ∈ ℝ, y ≥ 0",
    "$ echo \"$HOME\" | grep -E '^/h' >/dev/null 2>&1",
    "<|im_start <tool <|im_end| </tool_call",  # near-misses of special tokens stay plain text
]
WHITESPACE = [" ", "  ", "\t", "\n", "\r\n", "\r", "\u00a0", "\u3000", "\u2028", "\u2029", "\u200b", "\x0b", "\x0c",
              "\x85"]


def _random_code_point(rng: random.Random) -> str:
    while True:
        plane = rng.choice([0, 0, 1, 1, 2, 3, 14, 15, 16])
        cp = plane * 0x10000 + rng.randrange(0x10000)
        if not 0xD800 <= cp <= 0xDFFF:
            return chr(cp)


def _piece(rng: random.Random) -> str:
    kind = rng.randrange(10)
    n = rng.randint(1, 12)
    if kind == 0:
        return "".join(rng.choice(string.printable) for _ in range(n))
    if kind == 1:
        return "".join(chr(rng.randint(0xA0, 0xFF)) for _ in range(n))
    if kind == 2:
        return "".join(chr(rng.randint(0x4E00, 0x9FFF)) for _ in range(n))
    if kind == 3:
        return "".join(rng.choice(EMOJI) for _ in range(rng.randint(1, 4)))
    if kind == 4:  # letters with stacked combining marks
        return "".join(rng.choice("aeoinzAEO") + "".join(chr(rng.randint(0x300, 0x36F)) for _ in range(rng.randint(1, 3)))
                       for _ in range(rng.randint(1, 4)))
    if kind == 5:  # C0 and C1 control characters, NUL included
        return "".join(chr(rng.choice([*range(0x20), 0x7F, *range(0x80, 0xA0)])) for _ in range(n))
    if kind == 6:
        return rng.choice(WHITESPACE) * rng.randint(1, 9)
    if kind == 7:
        return rng.choice(CODE)
    if kind == 8:
        return "".join(_random_code_point(rng) for _ in range(n))
    return rng.choice(["Hello", "world", "Codette", " the", "perspective", "42", "3.14", "naïve", "ÆØÅ"])


def _random_strings(count: int = 600, seed: int = 1234) -> list[str]:
    rng = random.Random(seed)
    fixed = ["", " ", "\x00", "a\u0301", "\r\n\r\n", "\t\t\n  \n", "👩‍👩‍👦", "🇬🇧🇩🇪", "\U0010FFFD", "\uFFFE\uFEFF"]
    return fixed + ["".join(_piece(rng) for _ in range(rng.randint(1, 12))) for _ in range(count)]


STRINGS = _random_strings()


def test_random_unicode_round_trips_without_unk(tokenizer: CodetteTokenizer) -> None:
    assert len(STRINGS) >= 500
    unk = tokenizer.token_id(UNK)
    for s in STRINGS:
        ids = tokenizer.encode(s)
        assert tokenizer.decode(ids) == s, repr(s)
        assert unk not in ids, repr(s)
        assert all(0 <= i < len(tokenizer) for i in ids)


def test_rendered_conversations_round_trip(tokenizer: CodetteTokenizer, samples: list) -> None:
    for s in samples[:50]:
        text = render(s.messages, s.tools)
        assert tokenizer.decode(tokenizer.encode(text)) == text


def test_training_learned_merges(tokenizer: CodetteTokenizer) -> None:
    assert len(tokenizer) == 600
    text = "You are Codette, a multi-perspective reasoning assistant"
    assert len(tokenizer.encode(text)) < len(text.encode("utf-8")) / 2


# ------------------------------------------------------------------------------------------------
# Special tokens
# ------------------------------------------------------------------------------------------------
def test_every_special_token_encodes_to_one_id(tokenizer: CodetteTokenizer) -> None:
    for tok in SPECIAL_TOKENS:
        assert tokenizer.encode(tok) == [tokenizer.token_id(tok)], tok
        assert tokenizer.decode([tokenizer.token_id(tok)]) == tok
    # ... also inside running text.
    ids = tokenizer.encode("a<|im_start|>b<tool_call>c")
    assert tokenizer.im_start_id in ids and tokenizer.token_id("<tool_call>") in ids


def test_specials_occupy_the_first_ids_in_order(tokenizer: CodetteTokenizer) -> None:
    assert [tokenizer.token_id(t) for t in SPECIAL_TOKENS] == list(range(len(SPECIAL_TOKENS)))
    assert tokenizer.stop_ids == [tokenizer.im_end_id, tokenizer.eos_id]
    assert tokenizer.control_ids.isdisjoint(tokenizer.marker_ids)


def test_decode_skip_control_keeps_markers(tokenizer: CodetteTokenizer) -> None:
    ids = tokenizer.encode("<bos><|im_start|>assistant\n<perspective> newton\nHi<|im_end|>")
    assert tokenizer.decode(ids, skip_control=True) == "assistant\n<perspective> newton\nHi"


def test_unknown_token_lookup_raises(tokenizer: CodetteTokenizer) -> None:
    with pytest.raises(CodetteError, match="not in the vocabulary"):
        tokenizer.token_id("<|not_a_token|>")


# ------------------------------------------------------------------------------------------------
# Files
# ------------------------------------------------------------------------------------------------
def test_save_load_round_trip(tokenizer: CodetteTokenizer, tmp_path: Path) -> None:
    folder = tmp_path / "new" / "tok"  # created on save
    before = tokenizer.model_max_length
    tokenizer.model_max_length = 777
    try:
        tokenizer.save(folder)
    finally:
        tokenizer.model_max_length = before
    loaded = CodetteTokenizer.load(folder)
    assert len(loaded) == len(tokenizer)
    assert loaded.model_max_length == 777
    assert loaded.chat_template == tokenizer.chat_template
    for s in STRINGS[:200]:
        assert loaded.encode(s) == tokenizer.encode(s), repr(s)
    assert sorted(p.name for p in folder.iterdir()) == ["tokenizer.json", "tokenizer_config.json"]  # no temp files


def test_tokenizer_config_json_has_hf_keys(tokenizer: CodetteTokenizer, tmp_path: Path) -> None:
    tokenizer.save(tmp_path)
    cfg = json.loads((tmp_path / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert cfg["chat_template"] == CHAT_TEMPLATE
    assert cfg["bos_token"] == "<bos>"
    assert cfg["eos_token"] == "<|im_end|>"
    assert cfg["pad_token"] == "<pad>"
    assert cfg["unk_token"] == "<unk>"
    for tok in ("<eos>", "<|im_start|>", "<tool_call>", "</tool_call>"):
        assert tok in cfg["additional_special_tokens"]


def test_load_missing_folder_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(CodetteError, match="no tokenizer") as exc:
        CodetteTokenizer.load(missing)
    assert str(missing / "tokenizer.json") in str(exc.value)


def test_load_corrupt_tokenizer_json_names_the_path(tmp_path: Path) -> None:
    (tmp_path / "tokenizer.json").write_text('{"version": "1.0", "model": ')
    with pytest.raises(CodetteError, match="not a valid tokenizer") as exc:
        CodetteTokenizer.load(tmp_path)
    assert str(tmp_path / "tokenizer.json") in str(exc.value)


def test_load_corrupt_tokenizer_config_names_the_path(tokenizer: CodetteTokenizer, tmp_path: Path) -> None:
    tokenizer.save(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text("{oops")
    with pytest.raises(CodetteError) as exc:
        CodetteTokenizer.load(tmp_path)
    assert str(tmp_path / "tokenizer_config.json") in str(exc.value)


def test_vocab_size_too_small_raises() -> None:
    with pytest.raises(CodetteError, match="vocab_size"):
        CodetteTokenizer.train(["hello world"] * 10, vocab_size=256 + len(SPECIAL_TOKENS) - 1)


# ------------------------------------------------------------------------------------------------
# Chat template
# ------------------------------------------------------------------------------------------------
CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is 6 * 7?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"type": "function", "function": {"name": "calculator", "arguments": {"expression": "6 * 7"}}}]},
    {"role": "tool", "content": '{"result": 42}'},
    {"role": "assistant", "content": "6 * 7 = 42."},
    {"role": "user", "content": "Thanks! 🙂 Now the square root of 2 and 9, in Japanese?"},
    {"role": "assistant", "content": "計算します。", "tool_calls": [
        {"type": "function", "function": {"name": "calculator", "arguments": '{"expression": "sqrt(2)"}'}},
        {"name": "calculator", "arguments": {"expression": "sqrt(9)"}}]},
    {"role": "tool", "content": '{"result": 1.41}'},
    {"role": "tool", "content": '{"result": 3}'},
    {"role": "assistant", "content": "約1.41と3です。"},
]

CALL_42 = '<tool_call>\n{"name": "calculator", "arguments": {"expression": "6 * 7"}}\n</tool_call>'
CALL_SQRT2 = '<tool_call>\n{"name": "calculator", "arguments": {"expression": "sqrt(2)"}}\n</tool_call>'
CALL_SQRT9 = '<tool_call>\n{"name": "calculator", "arguments": {"expression": "sqrt(9)"}}\n</tool_call>'
ASSISTANT_TEXTS = [
    CALL_42 + "<|im_end|>\n",
    "6 * 7 = 42.<|im_end|>\n",
    "計算します。\n" + CALL_SQRT2 + "\n" + CALL_SQRT9 + "<|im_end|>\n",
    "約1.41と3です。<|im_end|>\n",
]
OTHER_TEXTS = [
    "<bos><|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 6 * 7?<|im_end|>\n"
    "<|im_start|>assistant\n",
    '<|im_start|>tool\n{"result": 42}<|im_end|>\n<|im_start|>assistant\n',
    "<|im_start|>user\nThanks! 🙂 Now the square root of 2 and 9, in Japanese?<|im_end|>\n<|im_start|>assistant\n",
    '<|im_start|>tool\n{"result": 1.41}<|im_end|>\n<|im_start|>tool\n{"result": 3}<|im_end|>\n'
    "<|im_start|>assistant\n",
]
EXPECTED_RENDER = "".join(x for pair in zip(OTHER_TEXTS, ASSISTANT_TEXTS) for x in pair)


def test_render_matches_the_hand_written_string() -> None:
    expected = (
        "<bos><|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nWhat is 6 * 7?<|im_end|>\n"
        '<|im_start|>assistant\n<tool_call>\n{"name": "calculator", "arguments": {"expression": "6 * 7"}}\n'
        "</tool_call><|im_end|>\n"
        '<|im_start|>tool\n{"result": 42}<|im_end|>\n'
        "<|im_start|>assistant\n6 * 7 = 42.<|im_end|>\n"
        "<|im_start|>user\nThanks! 🙂 Now the square root of 2 and 9, in Japanese?<|im_end|>\n"
        "<|im_start|>assistant\n計算します。\n"
        '<tool_call>\n{"name": "calculator", "arguments": {"expression": "sqrt(2)"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "calculator", "arguments": {"expression": "sqrt(9)"}}\n</tool_call><|im_end|>\n'
        '<|im_start|>tool\n{"result": 1.41}<|im_end|>\n'
        '<|im_start|>tool\n{"result": 3}<|im_end|>\n'
        "<|im_start|>assistant\n約1.41と3です。<|im_end|>\n"
    )
    assert render(CONVERSATION) == expected
    assert EXPECTED_RENDER == expected  # the pieces used by the mask test add up to the same text


def test_render_with_tools_matches_the_hand_written_string() -> None:
    tools = [{"type": "function", "function": {
        "name": "calculator", "description": "Évalue l'arithmétique.",
        "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]},
    }}]
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello!"}]
    expected = (
        "<bos><|im_start|>system\nBe brief.\n\n# Tools\n\n"
        "You can call these functions:\n- calculator(expression: string): Évalue l'arithmétique.\n\n"
        "To call a function, answer with a JSON object inside <tool_call></tool_call> tags:\n"
        '<tool_call>\n{"name": <function-name>, "arguments": <arguments-json-object>}\n</tool_call><|im_end|>\n'
        "<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello!<|im_end|>\n"
    )
    assert render(messages, tools) == expected
    # Without a system message the tools still get a system turn of their own.
    assert render(messages[1:], tools).startswith("<bos><|im_start|>system\n# Tools\n\n")


def test_generation_prompt_ends_with_assistant_header(tokenizer: CodetteTokenizer) -> None:
    for messages in ([{"role": "user", "content": "Hi"}], CONVERSATION[:2], CONVERSATION[:4]):
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
        assert text.endswith("<|im_end|>\n<|im_start|>assistant\n")
        assert text == render(messages) + "<|im_start|>assistant\n"


def test_system_message_not_first_raises() -> None:
    messages = [{"role": "user", "content": "Hi"}, {"role": "system", "content": "late"}]
    with pytest.raises(CodetteError, match="system message may only come first"):
        render(messages)


def _runs(ids: list[int], mask: list[int], value: int) -> list[list[int]]:
    runs: list[list[int]] = []
    prev = None
    for i, m in zip(ids, mask):
        if m == value:
            if prev != value:
                runs.append([])
            runs[-1].append(i)
        prev = m
    return runs


def test_encode_chat_masks_exactly_the_assistant_turns(tokenizer: CodetteTokenizer) -> None:
    ids, mask = tokenizer.encode_chat(CONVERSATION)
    assert len(ids) == len(mask) and set(mask) == {0, 1}
    assert tokenizer.decode(ids) == EXPECTED_RENDER
    assert [tokenizer.decode(r) for r in _runs(ids, mask, 1)] == ASSISTANT_TEXTS
    assert [tokenizer.decode(r) for r in _runs(ids, mask, 0)] == OTHER_TEXTS
    assert ids == tokenizer.encode(EXPECTED_RENDER)  # the mask does not change the tokenization


def test_encode_chat_masks_on_synthetic_conversations(tokenizer: CodetteTokenizer, samples: list) -> None:
    for s in samples[:60]:
        ids, mask = tokenizer.encode_chat(s.messages, s.tools)
        assert tokenizer.decode(ids) == render(s.messages, s.tools)
        runs = [tokenizer.decode(r) for r in _runs(ids, mask, 1)]
        assistants = [m for m in s.messages if m["role"] == "assistant"]
        assert len(runs) == len(assistants)
        for text, m in zip(runs, assistants):
            assert text.endswith("<|im_end|>\n") and "<|im_start|>" not in text
            assert text.startswith(m["content"] or "<tool_call>")
        for text in (tokenizer.decode(r) for r in _runs(ids, mask, 0)):
            assert text.endswith("<|im_start|>assistant\n")
