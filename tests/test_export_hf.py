"""Hugging Face export checked against ``transformers`` itself (no trust_remote_code)."""

from __future__ import annotations

import json

import pytest
import torch

from codette.errors import CodetteError
from codette.export import export_hf
from codette.tokenizer import SPECIAL_TOKENS, render
from tests._runtimes import require

transformers = require("transformers")

pytestmark = pytest.mark.slow
EXPECTED_CLASS = {"codette": "Starcoder2ForCausalLM", "llama": "LlamaForCausalLM", "gqa": "LlamaForCausalLM"}

TOOLS = [{"type": "function", "function": {
    "name": "calculator", "description": "Evaluate an arithmetic expression.",
    "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]}}}]
CONVERSATIONS = [
    ([{"role": "user", "content": "Who are you?"}], None, True),
    ([{"role": "system", "content": "You are Codette."}, {"role": "user", "content": "Hi"},
      {"role": "assistant", "content": "Hello! How can I help?"}, {"role": "user", "content": "Tell me a fact."}],
     None, True),
    ([{"role": "system", "content": "You are Codette."}, {"role": "user", "content": "What is 6*7?"},
      {"role": "assistant", "content": "",
       "tool_calls": [{"type": "function", "function": {"name": "calculator", "arguments": {"expression": "6*7"}}}]},
      {"role": "tool", "content": '{"result": 42}'}, {"role": "assistant", "content": "It is 42."}], TOOLS, False),
    ([{"role": "user", "content": "Two sums please: 1+1 and 2+2"},
      {"role": "assistant", "content": "Calling twice.", "tool_calls": [
          {"type": "function", "function": {"name": "calculator", "arguments": '{"expression": "1+1"}'}},
          {"type": "function", "function": {"name": "calculator", "arguments": {"expression": "2+2"}}}]},
      {"role": "tool", "content": '{"result": 2}'}, {"role": "tool", "content": '{"result": 4}'}], TOOLS, True),
    ([{"role": "user", "content": "Ünïcödé 漢字 😀 and <tool_call> markers\n\n  spaced"}], None, False),
]


@pytest.fixture(scope="module")
def hf_folders(trained_models, tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    return {name: export_hf(t.checkpoint, root / name) for name, t in trained_models.items()}


@pytest.mark.parametrize("name", ["codette", "llama", "gqa"])
def test_transformers_loads_and_matches_logits(trained_models, hf_folders, name) -> None:
    result = hf_folders[name]
    assert result.path.name == "codette_tiny-hf"
    assert {p.name for p in result.path.iterdir()} == {"config.json", "model.safetensors", "tokenizer.json",
                                                       "tokenizer_config.json", "generation_config.json"}
    hf = transformers.AutoModelForCausalLM.from_pretrained(result.path, dtype=torch.float32).eval()
    assert type(hf).__name__ == EXPECTED_CLASS[name]
    t = trained_models[name]
    ours = t.model()
    worst = 0.0
    for ids in t.val_sequences(4):
        with torch.no_grad():
            diff = (hf(torch.tensor([ids])).logits[0] - ours(torch.tensor([ids]))[0]).abs().max().item()
        worst = max(worst, diff)
    assert worst <= 1e-4, f"{name}: max |logit diff| {worst:.2e}"
    print(f"\n{name} -> {EXPECTED_CLASS[name]}: max |logit diff| {worst:.2e}")
    cfg = json.loads((result.path / "config.json").read_text())
    assert cfg["tie_word_embeddings"] is True and cfg["vocab_size"] == 512
    if name == "codette":
        assert cfg["hidden_act"] == "gelu_pytorch_tanh" and cfg["use_bias"] is False
    if name == "gqa":
        assert cfg["num_key_value_heads"] == 2


def test_tokenizer_and_chat_template_match(trained_models, hf_folders) -> None:
    tok = trained_models["llama"].tokenizer()
    hf_tok = transformers.AutoTokenizer.from_pretrained(hf_folders["llama"].path)
    for messages, tools, gen in CONVERSATIONS:
        ours = render(messages, tools, add_generation_prompt=gen)
        theirs = hf_tok.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=gen)
        assert theirs == ours
        assert hf_tok(ours, add_special_tokens=False)["input_ids"] == tok.encode(ours)
    assert hf_tok.eos_token == "<|im_end|>" and hf_tok.bos_token == "<bos>"
    assert all(hf_tok.convert_tokens_to_ids(s) == tok.token_id(s) for s in SPECIAL_TOKENS)
    gen_cfg = json.loads((hf_folders["llama"].path / "generation_config.json").read_text())
    assert gen_cfg["eos_token_id"] == [tok.im_end_id, tok.eos_id]


def test_hf_half_precision_and_bad_input(trained_models, tmp_path) -> None:
    half = export_hf(trained_models["codette"].checkpoint, tmp_path, dtype="bf16")
    hf = transformers.AutoModelForCausalLM.from_pretrained(half.path)
    assert hf.dtype == torch.bfloat16
    with pytest.raises(CodetteError, match="codette_tiny-hf already exists; pass --force"):
        export_hf(trained_models["codette"].checkpoint, tmp_path)
    with pytest.raises(CodetteError, match="'q8_0' is not available for --format hf"):
        export_hf(trained_models["codette"].checkpoint, tmp_path, dtype="q8_0")
    with pytest.raises(CodetteError, match="checkpoint not found"):
        export_hf(tmp_path / "missing.pt", tmp_path)
    export_hf(trained_models["codette"].checkpoint, tmp_path, force=True)


def test_hf_export_failing_halfway_leaves_no_folder(trained_models, tmp_path, monkeypatch) -> None:
    import codette.export.hf_export as hf_export

    def broken(*args, **kwargs):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(hf_export, "generation_config", broken)  # after model.safetensors is written
    with pytest.raises(OSError, match="disk full"):
        export_hf(trained_models["llama"].checkpoint, tmp_path)
    assert list(tmp_path.iterdir()) == []
