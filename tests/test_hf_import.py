"""Hugging Face model folders as Codette weights (``codette.checkpoint.hf``, ``codette.tokenizer.hf``).

Offline: tiny random ``LlamaForCausalLM``/``Qwen2ForCausalLM``/``MistralForCausalLM`` models are built with
``transformers`` and saved into ``tmp_path`` as safetensors; Codette's model must give their logits
(fp32, max abs diff <= 1e-4), and what it cannot read must be one clear line. An imported model exports
back: a GGUF (``llama`` or ``qwen2``, with the base model's own tokenizer under llama.cpp's name for its
pre-tokenizer) that llama.cpp runs and tokenizes like PyTorch, and a Hugging Face folder transformers runs.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from codette.checkpoint import save_checkpoint
from codette.checkpoint.hf import grow_vocab, hf_tensor_names, load_hf_weights, read_hf_config
from codette.checkpoint.manager import init_weights
from codette.errors import CodetteError
from codette.model import CodetteModel, count_parameters
from codette.tokenizer import SPECIAL_TOKENS, CodetteTokenizer
from codette.tokenizer.hf import load_hf_tokenizer
from tests._runtimes import require

transformers = require("transformers")

VOCAB, TOL = 300, 1e-4
SHAPE = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=128, rope_theta=50000.0, rms_norm_eps=1e-5)
ARCHS = {"llama": ("LlamaConfig", "LlamaForCausalLM"), "qwen2": ("Qwen2Config", "Qwen2ForCausalLM"),
         "mistral": ("MistralConfig", "MistralForCausalLM")}


def hf_model(folder: Path, arch: str, tied: bool, seed: int = 0, **extra: object) -> torch.nn.Module:
    """A random tiny model of ``arch`` saved into ``folder`` (safetensors). Norm scales and Qwen2's q/k/v
    biases are perturbed: transformers initialises them to ones and zeros, which would hide a wrong mapping."""
    config_cls, model_cls = (getattr(transformers, n) for n in ARCHS[arch])
    torch.manual_seed(seed)
    model = model_cls(config_cls(**{**SHAPE, **extra}, tie_word_embeddings=tied)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(0.2 * torch.randn_like(p))
            elif "embed" in name or "lm_head" in name:
                p.mul_(10)  # logits of order 1, not 0.01: the tolerance then means something
    model.save_pretrained(folder, safe_serialization=True)
    return model


def codette_model(folder: Path) -> CodetteModel:
    cfg = read_hf_config(folder)
    model = CodetteModel(cfg)
    model.load_state_dict(load_hf_weights(folder, cfg))
    return model.eval()


def ids_for(n: int = 48, batch: int = 2) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, n), generator=torch.Generator().manual_seed(1))


# ---- parity -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_imported_logits_equal_transformers(tmp_path: Path, arch: str, tied: bool) -> None:
    hf = hf_model(tmp_path, arch, tied)
    ours = codette_model(tmp_path)
    cfg = ours.cfg
    assert (cfg.block_style, cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.kv_heads, cfg.ffn_dim, cfg.vocab_size) == \
        ("llama", 64, 2, 4, 2, 160, VOCAB)
    assert (cfg.rope_theta, cfg.norm_eps, cfg.tie_embeddings, cfg.qkv_bias) == (50000.0, 1e-5, tied, arch == "qwen2")
    assert (ours.lm_head.weight is ours.embed.weight) == tied
    assert ours.num_parameters() == count_parameters(cfg) == sum(p.numel() for p in hf.parameters())
    ids = ids_for()
    with torch.no_grad():
        want = hf(ids).logits
        got = ours(ids)
    diff = (want - got).abs().max().item()
    print(f"{arch} {'tied' if tied else 'untied'}: max abs diff {diff:.3g} (logits up to {want.abs().max():.2f})")
    assert diff <= TOL
    # Decoding with the KV cache (the one-token path computes q/k/v separately, biases included).
    cache = ours.new_cache(batch=2)
    with torch.no_grad():
        ours(ids[:, :-3], cache=cache)
        steps = [ours(ids[:, i : i + 1], cache=cache) for i in range(ids.shape[1] - 3, ids.shape[1])]
    assert (torch.cat(steps, dim=1) - want[:, -3:]).abs().max().item() <= TOL


def test_mistral_reads_as_llama_and_a_sliding_window_cuts_the_context(tmp_path: Path) -> None:
    hf = hf_model(tmp_path / "full", "mistral", tied=False, sliding_window=None)
    ours = codette_model(tmp_path / "full")
    assert ours.cfg.max_seq_len == 128 and not ours.cfg.qkv_bias
    with torch.no_grad():
        assert (hf(ids_for()).logits - ours(ids_for())).abs().max().item() <= TOL
    hf = hf_model(tmp_path / "window", "mistral", tied=False, sliding_window=32)
    ours = codette_model(tmp_path / "window")
    assert ours.cfg.max_seq_len == 32  # exact within the window, refused beyond it
    with torch.no_grad():
        assert (hf(ids_for(32)).logits - ours(ids_for(32))).abs().max().item() <= TOL
    with pytest.raises(ValueError, match="exceeds the model's context max_seq_len=32"):
        ours(ids_for(33))


def test_the_name_table_is_exports(tmp_path: Path) -> None:
    """Import reads with the table export writes with (one table, not two)."""
    from codette.export import hf_export

    assert hf_export.hf_tensor_names is hf_tensor_names
    hf_model(tmp_path, "qwen2", tied=False)
    cfg = read_hf_config(tmp_path)
    names = {hf for hf, _ in hf_tensor_names(cfg)}
    from safetensors import safe_open

    with safe_open(str(tmp_path / "model.safetensors"), framework="pt") as fh:
        assert set(fh.keys()) == names


# ---- bad input --------------------------------------------------------------------------------------------
def one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and msg
    return msg


def test_a_folder_without_config_json_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(CodetteError) as exc:
        read_hf_config(tmp_path)
    assert one_line(exc) == f"{tmp_path} has no config.json: not a Hugging Face model folder (one holds config.json " \
                            f"and *.safetensors)"
    with pytest.raises(CodetteError, match="is not a folder"):
        read_hf_config(tmp_path / "missing")


def test_an_unsupported_architecture_is_one_line_listing_what_is_read(tmp_path: Path) -> None:
    gpt2 = transformers.GPT2Config(vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4)
    gpt2.architectures = ["GPT2LMHeadModel"]
    gpt2.save_pretrained(tmp_path)
    with pytest.raises(CodetteError) as exc:
        read_hf_config(tmp_path)
    assert one_line(exc) == (f"{tmp_path / 'config.json'}: architectures ['GPT2LMHeadModel'] is not one Codette can "
                             f"read; it reads LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM")


@pytest.mark.parametrize(("change", "said"), [
    ({"hidden_act": "gelu"}, "hidden_act 'gelu'; Codette's SwiGLU reads only 'silu'"),
    ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "RoPE scaling 'llama3'"),
    ({"rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4}}, "RoPE scaling 'linear'"),
    ({"head_dim": 32}, "head_dim 32 is not hidden_size/num_attention_heads (64/4)"),
    ({"attention_bias": True}, "attention_bias is true"),
    ({"rope_interleaved": True}, "rope_interleaved is true; Codette rotates halves"),
    ({"architectures": None}, "architectures None is not one Codette can read"),
    ({"num_attention_heads": 5, "head_dim": None}, "n_heads (5) must divide d_model (64)"),
    ({"vocab_size": "many"}, "'vocab_size' must be a positive int"),
])
def test_what_codette_cannot_compute_exactly_is_refused_by_name(tmp_path: Path, change: dict, said: str) -> None:
    hf_model(tmp_path, "llama", tied=True)
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, **change}))
    with pytest.raises(CodetteError) as exc:
        read_hf_config(tmp_path)
    assert said in one_line(exc)


def test_weights_missing_unexpected_misshapen_or_pickled_are_named(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    hf_model(tmp_path, "llama", tied=False)
    cfg = read_hf_config(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    cases = [
        ({k: v for k, v in weights.items() if k != "lm_head.weight"},
         "no tensor 'lm_head.weight' (config.json says tie_word_embeddings is false); 1 missing in all"),
        ({**weights, "model.layers.0.self_attn.q_proj.bias": torch.zeros(64)},
         "tensor 'model.layers.0.self_attn.q_proj.bias' is not part of a LlamaForCausalLM model"),
        ({**weights, "model.norm.weight": torch.ones(65)}, "tensor 'model.norm.weight' has shape [65], config.json "
                                                           "implies [64]"),
    ]
    for tensors, said in cases:
        save_file(tensors, tmp_path / "model.safetensors")
        with pytest.raises(CodetteError) as exc:
            load_hf_weights(tmp_path, cfg)
        assert said in one_line(exc)
    (tmp_path / "model.safetensors").unlink()
    torch.save(weights, tmp_path / "pytorch_model.bin")
    with pytest.raises(CodetteError) as exc:
        load_hf_weights(tmp_path, cfg)
    assert "holds pickled weights (*.bin) only; Codette reads *.safetensors and never unpickles" in one_line(exc)


def test_an_old_checkpoint_with_inv_freq_and_a_stored_tied_head_loads(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    hf_model(tmp_path, "llama", tied=True)
    weights = load_file(tmp_path / "model.safetensors")
    extra = {"lm_head.weight": weights["model.embed_tokens.weight"].clone(),
             "model.layers.0.self_attn.rotary_emb.inv_freq": torch.ones(8)}
    save_file({**weights, **extra}, tmp_path / "model.safetensors")
    ours = codette_model(tmp_path)
    assert ours.lm_head.weight is ours.embed.weight


# ---- the trainer's path -----------------------------------------------------------------------------------
def test_init_weights_accepts_a_hugging_face_folder(tmp_path: Path) -> None:
    """What the trainer calls for ``train.init_from`` (Trainer -> checkpoint.manager.init_weights)."""
    hf = hf_model(tmp_path, "qwen2", tied=True)
    cfg = read_hf_config(tmp_path)
    source, weights = init_weights(str(tmp_path), cfg, tokenizer_sha256="ab" * 32)
    assert source == tmp_path
    model = CodetteModel(cfg)
    model.load_state_dict(weights)
    with torch.no_grad():
        assert (hf(ids_for()).logits - model.eval()(ids_for())).abs().max().item() <= TOL
    # A run whose tokenizer gained tokens: the embedding grows, and the old tokens' logits do not change.
    bigger = read_hf_config(tmp_path)
    bigger.vocab_size = 320
    _, grown = init_weights(tmp_path, bigger, None)
    assert grown["embed.weight"].shape == (320, 64) and grown["lm_head.weight"] is grown["embed.weight"]
    model = CodetteModel(bigger)
    model.load_state_dict(grown)
    with torch.no_grad():
        assert (hf(ids_for()).logits - model.eval()(ids_for())[..., :VOCAB]).abs().max().item() <= TOL
    # Another shape, or fewer rows, is one line naming what differs.
    other = read_hf_config(tmp_path)
    other.n_layers = 3
    with pytest.raises(CodetteError, match=r"--init-from .*: n_layers 2 != 3 in this config \(the run's model shape"):
        init_weights(tmp_path, other, None)
    fewer = read_hf_config(tmp_path)
    fewer.vocab_size = 256
    with pytest.raises(CodetteError, match=r"vocab_size 300 != 256 in this config \(embedding rows"):
        init_weights(tmp_path, fewer, None)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CodetteError) as exc:
        init_weights(empty, cfg, None)
    assert one_line(exc).endswith("empty holds no model: no model_best.pt, model_final.pt or model_step_N.pt, and no "
                                  "config.json of a Hugging Face model")


# ---- the base model's tokenizer ---------------------------------------------------------------------------
def hf_tokenizer_json(folder: Path, vocab_size: int = VOCAB) -> Tokenizer:
    """A SmolLM2-like tokenizer.json (byte-level BPE with <|endoftext|>, <|im_start|>, <|im_end|>), with a
    BOS post-processor and truncation set, as some Hub files have."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    texts = ["Hello there, how are you? I am a small model.", "def f(x):\n    return x * 2\n"] * 20
    tok.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    tok.post_processor = processors.TemplateProcessing(single="<|endoftext|> $A",
                                                       special_tokens=[("<|endoftext|>", 0)])
    tok.enable_truncation(max_length=8)
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    return tok


# Base models' pre-tokenizers as their tokenizer.json files write them: Llama 3's and Qwen2's Split regexes
# before a byte-level map (llama.cpp's "llama-bpe" ignores merges for words in the vocabulary, as Llama 3's
# BPE does; Qwen2's has an NFC normalizer), and GPT-2's plain ByteLevel (hf_tokenizer_json).
TOKENIZER_STYLE = {"llama": "llama3", "qwen2": "qwen2"}
TOKENIZER_TEXTS = ["Hello there, how are you? I am a small model, and I'm fine. It's 12345 or 3.14 today.",
                   "def f(x):\n    return x * 2  # twice\n\n\tprint(f(21))\r\n", "Ωμέγα naïve café 漢字 😀 ½"] * 20


def base_tokenizer_json(folder: Path, style: str, vocab_size: int = VOCAB) -> Tokenizer:
    """A base model's tokenizer.json of ``style`` (gpt2 | llama3 | qwen2) trained on a few texts, with the
    special tokens such files have and one non-special added token (``<think>``), as Qwen2.5 has some."""
    from tokenizers import AddedToken, Regex

    from codette.export.gguf_vocab import LLAMA3_REGEX, QWEN2_REGEX

    if style == "gpt2":
        return hf_tokenizer_json(folder, vocab_size)
    regex = {"llama3": LLAMA3_REGEX, "qwen2": QWEN2_REGEX}[style]
    tok = Tokenizer(models.BPE(ignore_merges=style == "llama3"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(regex), behavior="isolated"),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    if style == "qwen2":
        tok.normalizer = normalizers.NFC()
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(TOKENIZER_TEXTS, trainers.BpeTrainer(
        vocab_size=vocab_size - 1, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    tok.add_tokens([AddedToken("<think>", special=False, normalized=False)])
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    return tok


def llama_runtime(path: Path, f32_cache: bool = True):
    """llama.cpp (llama-cpp-python) on ``path``, with an F32 K/V cache or its default F16 one, closed afterwards."""
    from tests.test_export_gguf import runtime

    return runtime(path, **({"type_k": 0, "type_v": 0} if f32_cache else {}))  # 0: GGML_TYPE_F32


def cpp_logits(llm, ids: list[int]) -> np.ndarray:
    """llama.cpp's logits of every position of ``ids`` (tests.test_export_gguf's)."""
    from tests.test_export_gguf import cpp_logits as logits

    return logits(llm, ids)


def test_the_base_tokenizer_gains_codettes_special_tokens_and_the_embedding_its_rows(tmp_path: Path) -> None:
    base = hf_tokenizer_json(tmp_path)
    n = base.get_vocab_size()
    got = load_hf_tokenizer(tmp_path, model_max_length=128)
    tok = got.tokenizer
    assert got.base_tokens == n and got.added == [t for t in SPECIAL_TOKENS if t not in ("<|im_start|>", "<|im_end|>")]
    assert got.added_ids == list(range(n, n + len(got.added))) and len(tok) == n + len(got.added)
    assert tok.im_start_id == base.token_to_id("<|im_start|>")  # kept: its trained row stays
    text = "Hello there, how are you? I am a small model, and this is longer than eight tokens."
    assert tok.decode(tok.encode(text)) == text  # no truncation, no BOS post-processor
    ids, mask = tok.encode_chat([{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi there"}])
    assert ids[0] == tok.bos_id and tok.im_end_id in ids and sum(mask) > 0
    assert got.embedding_rows(n + 64) == n + 64 and got.rows_to_grow(n + 64) == 0
    assert got.embedding_rows(n) == 64 * -(-len(tok) // 64) and got.rows_to_grow(n) == got.embedding_rows(n) - n
    tok.save(tmp_path / "run")  # a Codette tokenizer from here on
    from codette.tokenizer import CodetteTokenizer

    assert len(CodetteTokenizer.load(tmp_path / "run")) == len(tok)
    with pytest.raises(CodetteError, match="has no tokenizer.json: the base model's own tokenizer is needed"):
        load_hf_tokenizer(tmp_path / "run" / "nothing")


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_grown_rows_are_the_mean_and_change_nothing_for_old_tokens(tmp_path: Path, tied: bool) -> None:
    hf_model(tmp_path, "llama", tied=tied)
    cfg = read_hf_config(tmp_path)
    weights = load_hf_weights(tmp_path, cfg)
    # 290 real tokens in a 300-row table (Qwen2-style padding rows), 20 tokens added: 10 on padding rows.
    grown, new_cfg = grow_vocab(weights, cfg, 320, new_rows=range(290, 300), mean_of=290)
    assert new_cfg.vocab_size == 320 and cfg.vocab_size == VOCAB
    for key in ("embed.weight", "lm_head.weight"):
        mean = weights[key][:290].mean(0)
        assert torch.allclose(grown[key][290:], mean.expand(30, -1))
        assert torch.equal(grown[key][:290], weights[key][:290])
    assert (grown["lm_head.weight"] is grown["embed.weight"]) == tied
    old, new = CodetteModel(cfg).eval(), CodetteModel(new_cfg).eval()
    old.load_state_dict(weights)
    new.load_state_dict(grown)
    ids = ids_for() % 290
    with torch.no_grad():
        assert torch.allclose(old(ids)[..., :290], new(ids)[..., :290], atol=1e-6)
    with pytest.raises(CodetteError, match="cannot shrink the embedding from 300 to 200 rows"):
        grow_vocab(weights, cfg, 200)


# ---- an imported model exported again ---------------------------------------------------------------------
def imported_checkpoint(root: Path, arch: str, tied: bool, tokenizer: str = "gpt2", vocab_size: int = 280
                        ) -> tuple[torch.nn.Module, Path, object]:
    """A Codette checkpoint of a random base model (``root/run/model_final.pt``) as ``codette train`` starts it:
    the base's own tokenizer (style ``tokenizer``) with Codette's special tokens, the embedding grown to fit.
    Returns (the transformers model, the checkpoint, the HFTokenizer)."""
    import dataclasses

    hf = hf_model(root / "base", arch, tied=tied)
    base_tokenizer_json(root / "base", tokenizer, vocab_size)
    got = load_hf_tokenizer(root / "base", model_max_length=128)
    cfg = read_hf_config(root / "base")
    rows = got.embedding_rows(cfg.vocab_size)
    weights, cfg = grow_vocab(load_hf_weights(root / "base", cfg), cfg, rows, new_rows=got.added_ids,
                              mean_of=got.base_tokens)
    run = root / "run"
    run.mkdir()
    got.tokenizer.save(run)
    save_checkpoint({"model": weights, "model_config": dataclasses.asdict(cfg), "step": 0}, run / "model_final.pt")
    return hf, run / "model_final.pt", got


@pytest.mark.parametrize(("arch", "tied", "tokenizer", "cls"), [
    ("qwen2", False, "qwen2", "Qwen2ForCausalLM"), ("qwen2", True, "qwen2", "Qwen2ForCausalLM"),
    ("llama", True, "llama3", "LlamaForCausalLM"), ("llama", False, "gpt2", "LlamaForCausalLM")])
def test_an_imported_model_exports_back_to_its_architecture(tmp_path: Path, arch: str, tied: bool, tokenizer: str,
                                                            cls: str) -> None:
    """A Codette checkpoint of an imported model (its own tokenizer grown by Codette's special tokens) exports
    as its architecture with the same logits: a Hugging Face folder for transformers, a GGUF (``qwen2`` with
    the q/k/v biases, or ``llama``) for llama.cpp."""
    from codette.export import export_gguf, export_hf

    hf, ckpt, got = imported_checkpoint(tmp_path, arch, tied, tokenizer=tokenizer)
    out = export_hf(ckpt, tmp_path / "exported")
    assert out.architecture == cls
    back = transformers.AutoModelForCausalLM.from_pretrained(out.path, dtype=torch.float32).eval()
    assert type(back).__name__ == cls
    ids = ids_for() % got.base_tokens
    with torch.no_grad():
        want = hf(ids).logits[..., :got.base_tokens]
        hf_diff = (back(ids).logits[..., :got.base_tokens] - want).abs().max().item()
    assert read_hf_config(out.path).qkv_bias == (arch == "qwen2")
    result = export_gguf(ckpt, tmp_path / "gguf", "f32", modelfile=False)
    assert result.arch == arch
    with llama_runtime(result.path) as llm:
        cpp_diff = max(float(np.abs(cpp_logits(llm, row)[:, :got.base_tokens] - expected).max())
                       for row, expected in zip(ids.tolist(), want.numpy(), strict=True))
    print(f"\n{arch} {'tied' if tied else 'untied'}: max |logit diff| from the base model: HF export {hf_diff:.2e}, "
          f"GGUF f32 in llama.cpp {cpp_diff:.2e} (logits up to {want.abs().max():.1f})")
    assert hf_diff <= TOL and cpp_diff <= TOL


def test_qkv_bias_models_count_build_and_export_their_shapes() -> None:
    """The biases are counted, built on the meta device like the rest, and listed for the exporters."""
    from codette.export.source import expected_shapes
    from codette.model import ModelConfig

    cfg = ModelConfig(vocab_size=128, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, block_style="llama",
                      qkv_bias=True)
    model = CodetteModel(cfg)
    assert model.num_parameters() == count_parameters(cfg) == count_parameters(
        ModelConfig(**{**cfg.__dict__, "qkv_bias": False})) + 2 * (32 + 2 * 16)
    assert expected_shapes(cfg) == {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert all(not b.any() for n, b in model.named_parameters() if n.endswith("bias"))  # zeros, as HF's
    torch.manual_seed(0)
    with torch.device("meta"):
        lazy = CodetteModel(cfg)
    lazy.to_empty(device="cpu")
    torch.manual_seed(0)
    eager = CodetteModel(cfg)
    torch.manual_seed(0)
    lazy.init_weights()
    assert all(torch.equal(a, b) for a, b in zip(lazy.state_dict().values(), eager.state_dict().values()))


def test_a_qkv_bias_model_is_gguf_qwen2_and_only_qwen2() -> None:
    """llama.cpp's ``llama`` graph would drop the biases (or rotate pairs of them): it is refused by name."""
    from codette.export.arch import resolve_arch
    from codette.model import ModelConfig

    shape = dict(vocab_size=128, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, block_style="llama")
    biased, plain = ModelConfig(**shape, qkv_bias=True), ModelConfig(**shape)
    assert resolve_arch(biased, None) == resolve_arch(biased, "auto") == resolve_arch(biased, "qwen2") == "qwen2"
    assert resolve_arch(plain, None) == "llama"
    with pytest.raises(CodetteError) as exc:
        resolve_arch(biased, "llama")
    assert one_line(exc) == ("model_config.block_style='llama' (RMSNorm + SwiGLU) with q/k/v biases "
                             "(model_config.qkv_bias) cannot be expressed by GGUF architecture 'llama'; use qwen2")
    with pytest.raises(CodetteError, match=r"cannot be expressed by GGUF architecture 'qwen2'; use llama$"):
        resolve_arch(plain, "qwen2")


def test_init_weights_sets_the_rows_past_the_base_tokenizer_to_its_mean(tmp_path: Path) -> None:
    """Qwen2-style: the table has padding rows past its tokenizer, where Codette's added tokens land."""
    hf_model(tmp_path, "llama", tied=False)
    n = hf_tokenizer_json(tmp_path, vocab_size=280).get_vocab_size()
    assert n < VOCAB
    cfg = read_hf_config(tmp_path)
    original = load_hf_weights(tmp_path, cfg)
    got = load_hf_tokenizer(tmp_path)
    run_cfg = read_hf_config(tmp_path)
    run_cfg.vocab_size = got.embedding_rows(cfg.vocab_size)
    assert run_cfg.vocab_size == VOCAB and got.added_ids[-1] < VOCAB  # the added tokens fit in the padding rows
    _, weights = init_weights(tmp_path, run_cfg, None)
    for key in ("embed.weight", "lm_head.weight"):
        assert torch.equal(weights[key][:n], original[key][:n])
        assert torch.allclose(weights[key][n:], original[key][:n].mean(0).expand(VOCAB - n, -1))


# ---- the command line: codette data, tokenizer and train from a base model ----------------------------------
def test_codette_train_from_a_base_model_keeps_its_tokenizer_and_shape(tmp_path: Path) -> None:
    """`--init-from HF_FOLDER` through the stages: the tokenizer stage writes the base's tokenizer (plus the
    special tokens), the model takes the base's shape, and training starts from its weights."""
    from typer.testing import CliRunner

    from codette.cli.main import app

    base = tmp_path / "base"
    hf_model(base, "llama", tied=False)
    hf_tokenizer_json(base)
    out = tmp_path / "run"
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"data": {"samples": 60}, "model": {"max_seq_len": 96},
                               "train": {"init_from": str(base), "max_steps": 2, "batch_size": 2, "eval_every": 2,
                                         "save_every": 2, "eval_batches": 1, "probes": 0, "copy_monitor": 0,
                                         "dtype": "fp32", "warmup_steps": 0}}))
    runner = CliRunner()
    for verb in ("data", "tokenizer", "train"):
        res = runner.invoke(app, [verb, "-c", str(cfg), "-o", str(out)], catch_exceptions=False)
        assert res.exit_code == 0, res.output
    tok = CodetteTokenizer.load(out)
    assert tok.encode("Hello there") == load_hf_tokenizer(base).tokenizer.encode("Hello there")
    ckpt = torch.load(out / "model_final.pt", map_location="cpu", weights_only=True)
    shape = read_hf_config(base)
    model_cfg = ckpt["model_config"]
    assert (model_cfg["d_model"], model_cfg["n_layers"], model_cfg["n_kv_heads"], model_cfg["max_seq_len"]) == \
        (shape.d_model, shape.n_layers, shape.n_kv_heads, 96)
    assert model_cfg["vocab_size"] >= len(tok)
    start = next(r for r in map(json.loads, next((out / "training_logs").glob("metrics_*.jsonl")).read_text()
                                .splitlines()) if r["kind"] == "start")
    assert start["init_from"] == str(base)


# ---- GGUF of an imported model: its own tokenizer under llama.cpp's name for its pre-tokenizer ---------------
def parity_strings(nfc: bool) -> list[str]:
    """Text that separates the pre-tokenizers: digit runs, contractions in both cases, line breaks and
    spaces before words and symbols, unicode, every special token, and the added ``<think>``; in NFC when
    the tokenizer normalizes to it (llama.cpp does not normalize)."""
    import random
    import unicodedata

    pieces = ["Hello", "there", "I'M", "it's", "WE'LL", "don't", "7", "42", "12345", "3.14159", "1,234,567", "v2.0.1",
              "  ", "   ", "\t", "\n", "\n\n", "\r\n", " \n ", "x**2", "->", "é", "naïve", "Ωμέγα", "漢字", "😀", "½",
              "e\u0301", "\u00a0", "def f(x):\n    return x * 2\n", '{"a": [1, 2]}', "<|im", "end|>", "<think>",
              "<|endoftext|>", *SPECIAL_TOKENS]
    rng = random.Random(0)
    texts = list(SPECIAL_TOKENS) + TOKENIZER_TEXTS[:3]
    while len(texts) < 400:
        texts.append(rng.choice(["", " ", "\n", "  "]).join(rng.choice(pieces) for _ in range(rng.randint(1, 10))))
    return [unicodedata.normalize("NFC", t) for t in texts] if nfc else texts


@pytest.mark.parametrize(("style", "pre"), [("gpt2", "gpt-2"), ("llama3", "llama-bpe"), ("qwen2", "qwen2")])
def test_the_gguf_carries_the_base_tokenizer_and_llama_cpp_tokenizes_like_it(tmp_path: Path, style: str,
                                                                             pre: str) -> None:
    """Tokens, merges, types, special ids, the pre-tokenizer's llama.cpp name and the chat template; llama.cpp
    then cuts every test string into our ids and detokenizes them back."""
    import gguf

    from codette.export import export_gguf
    from codette.export.gguf_vocab import OLLAMA_PRETOKENIZER_KEY, LLAMA3_REGEX, QWEN2_REGEX, GPT2_REGEX
    from codette.tokenizer import CHAT_TEMPLATE, CONTROL_TOKENS, MARKER_TOKENS

    _, ckpt, got = imported_checkpoint(tmp_path, "llama", True, tokenizer=style)
    tok = got.tokenizer
    path = export_gguf(ckpt, tmp_path / "gguf", "f32", modelfile=False).path
    f = {k: v.contents() for k, v in gguf.GGUFReader(path).fields.items() if not k.startswith("GGUF.")}
    assert f["tokenizer.ggml.model"] == "gpt2" and f["tokenizer.ggml.pre"] == pre
    assert f[OLLAMA_PRETOKENIZER_KEY] == {"gpt2": GPT2_REGEX, "llama3": LLAMA3_REGEX, "qwen2": QWEN2_REGEX}[style]
    tokens, types = f["tokenizer.ggml.tokens"], f["tokenizer.ggml.token_type"]
    assert len(tokens) == len(types) == VOCAB > len(tok)
    assert tokens[:len(tok)] == [tok.tok.id_to_token(i) for i in range(len(tok))]
    assert tokens[len(tok):] == [f"[PAD{i}]" for i in range(len(tok), VOCAB)]
    assert set(types[len(tok):]) == {gguf.TokenType.UNUSED}
    assert f["tokenizer.ggml.merges"][:3] == [" ".join(m) for m in json.loads(tok.tok.to_str())["model"]["merges"][:3]]
    expected_types = {**dict.fromkeys(CONTROL_TOKENS, gguf.TokenType.CONTROL),
                      **dict.fromkeys(MARKER_TOKENS, gguf.TokenType.USER_DEFINED),
                      "<|endoftext|>": gguf.TokenType.CONTROL}  # the base's own special token
    if style != "gpt2":
        expected_types["<think>"] = gguf.TokenType.USER_DEFINED  # the base's non-special added token
    for text, kind in expected_types.items():
        assert types[tok.token_id(text)] == kind, text
    assert types[tok.encode("Hello")[0]] == gguf.TokenType.NORMAL
    assert (f["tokenizer.ggml.bos_token_id"], f["tokenizer.ggml.eos_token_id"], f["tokenizer.ggml.eot_token_id"],
            f["tokenizer.ggml.padding_token_id"]) == (tok.bos_id, tok.im_end_id, tok.im_end_id, tok.pad_id)
    assert f["tokenizer.ggml.add_bos_token"] is False and f["tokenizer.chat_template"] == CHAT_TEMPLATE
    llama_cpp = require("llama_cpp")
    llm = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
    try:
        texts = parity_strings(nfc=style == "qwen2")
        for text in texts:
            theirs = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
            assert theirs == tok.encode(text), f"{pre}: tokenization differs for {text!r}"
            assert llm.detokenize(theirs, special=True).decode("utf-8") == text
        assert llm.token_bos() == tok.bos_id and llm.token_eos() == tok.im_end_id
    finally:
        llm.close()


def test_a_wrong_llama_cpp_name_would_tokenize_differently(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gguf

    """Control: Llama 3's tokenizer (digit runs of up to three, merged into "123"-style tokens) written under
    Qwen2's name (every digit alone) is cut differently by llama.cpp, so the parity check above can fail."""
    from codette.export import export_gguf, gguf_vocab

    wrong = tuple(gguf_vocab.SplitPreTokenizer("qwen2", b.regex, True, b.models) if b.pre == "llama-bpe" else b
                  for b in gguf_vocab.BASE_PRE_TOKENIZERS)
    monkeypatch.setattr(gguf_vocab, "BASE_PRE_TOKENIZERS", wrong)
    _, ckpt, got = imported_checkpoint(tmp_path, "llama", False, tokenizer="llama3")
    path = export_gguf(ckpt, tmp_path / "gguf", "f32", modelfile=False).path
    assert gguf.GGUFReader(path).fields["tokenizer.ggml.pre"].contents() == "qwen2"
    llama_cpp = require("llama_cpp")
    llm = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
    try:
        texts = parity_strings(nfc=False)
        differ = [t for t in texts if llm.tokenize(t.encode(), add_bos=False, special=True) != got.tokenizer.encode(t)]
    finally:
        llm.close()
    assert len(differ) > 20


@pytest.mark.parametrize(("change", "said"), [
    (lambda t: setattr(t, "pre_tokenizer", pre_tokenizers.ByteLevel(add_prefix_space=True)),
     r'pre-tokenizer \{"type": "ByteLevel", "add_prefix_space": true, .* with ignore_merges true has no llama\.cpp '
     r"equivalent; GGUF export recognises GPT-2's byte-level regex \(gpt-2\), .*Qwen2's Split regex with "
     r"ignore_merges false \(qwen2\); --format hf writes any tokenizer$"),
    (lambda t: setattr(t, "pre_tokenizer", pre_tokenizers.Whitespace()),
     r'pre-tokenizer \{"type": "Whitespace"\} with ignore_merges true has no llama\.cpp equivalent'),
    (lambda t: setattr(t.model, "ignore_merges", False),  # Llama 3's regex, but merges applied to known words
     r'pre-tokenizer \{"type": "Sequence", .* with ignore_merges false has no llama\.cpp equivalent'),
    (lambda t: setattr(t, "normalizer", normalizers.Lowercase()),
     r'normalizer \{"type": "Lowercase"\} has no llama\.cpp equivalent \(GGUF export takes none, or NFC\)'),
    (lambda t: setattr(t.model, "byte_fallback", True),
     r"BPE has byte_fallback True \(a SentencePiece-style or sub-word BPE\)"),
], ids=["prefix-space", "whitespace", "merges", "lowercase", "byte-fallback"])
def test_a_tokenizer_llama_cpp_would_cut_differently_is_one_line_and_nothing_is_written(
        tmp_path: Path, change, said: str) -> None:
    from codette.export import export_gguf

    _, ckpt, got = imported_checkpoint(tmp_path, "llama", True, tokenizer="llama3")
    change(got.tokenizer.tok)
    got.tokenizer.save(ckpt.parent)
    out = tmp_path / "gguf"
    with pytest.raises(CodetteError) as exc:
        export_gguf(ckpt, out, "f32")
    msg = one_line(exc)
    assert msg.startswith(f"{ckpt.parent / 'tokenizer.json'}: ")
    assert re.search(said, msg), msg
    assert not out.exists() or list(out.iterdir()) == []  # no GGUF, no temporary, no Modelfile


# ---- the round trip: import -> 20 steps of `codette train` -> GGUF -> llama.cpp -> HF -> transformers ----------
@pytest.mark.slow
@pytest.mark.parametrize(("arch", "tied", "base_tokens"), [("llama", True, VOCAB), ("qwen2", False, 280)],
                         ids=["llama-tied-grown", "qwen2-untied"])
def test_round_trip_import_finetune_gguf_and_hf(tmp_path: Path, arch: str, tied: bool, base_tokens: int) -> None:
    """A random base model and its tokenizer, fine-tuned 20 steps through the CLI, exported both ways: llama.cpp
    gives PyTorch's logits (F32, top-1 over held-out conversations) and tokenizes them to the same ids, the
    Modelfile's special strings are single tokens of the GGUF, and transformers gives the same logits too.
    ``llama-tied-grown``: 300 base tokens in a 300-row table, so the special tokens grow it to 320 rows."""
    import gguf
    from typer.testing import CliRunner

    from codette.checkpoint import load_model
    from codette.cli.main import app
    from codette.export import export_gguf
    from codette.export.modelfile import GO_TEMPLATE, STOP_STRINGS
    from codette.tokenizer import render

    base = tmp_path / "base"
    hf_model(base, arch, tied=tied)
    base_tokenizer_json(base, TOKENIZER_STYLE[arch], base_tokens)
    out = tmp_path / "run"
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"data": {"samples": 80}, "model": {"max_seq_len": 96},
                               "train": {"init_from": str(base), "max_steps": 20, "batch_size": 4, "eval_every": 20,
                                         "save_every": 20, "eval_batches": 1, "probes": 0, "copy_monitor": 0,
                                         "dtype": "fp32", "warmup_steps": 0, "lr": 3e-3, "threads": 1}}))
    runner = CliRunner()
    for verb in ("data", "tokenizer", "train"):
        res = runner.invoke(app, [verb, "-c", str(cfg), "-o", str(out)], catch_exceptions=False)
        assert res.exit_code == 0, res.output
    model, state = load_model(out / "model_final.pt")
    tok = CodetteTokenizer.load(out)
    assert state["step"] == 20 and model.cfg.qkv_bias == (arch == "qwen2") and model.cfg.tie_embeddings == tied
    assert model.cfg.vocab_size == (320 if base_tokens == VOCAB else VOCAB) >= len(tok)
    start = load_hf_weights(base, read_hf_config(base))["blocks.0.attn.q_proj.weight"]
    assert not torch.equal(model.blocks[0].attn.q_proj.weight.detach(), start)  # it was fine-tuned

    res = runner.invoke(app, ["export", str(out / "model_final.pt"), "--quant", "f32", "-o", str(tmp_path / "gguf")],
                        catch_exceptions=False)
    assert res.exit_code == 0, res.output
    path = next((tmp_path / "gguf").glob("*.gguf"))
    assert f"GGUF ({arch}, f32)" in res.output
    fields = {k: v.contents() for k, v in gguf.GGUFReader(path).fields.items() if not k.startswith("GGUF.")}
    assert fields["general.architecture"] == arch
    assert fields["tokenizer.ggml.pre"] == {"llama": "llama-bpe", "qwen2": "qwen2"}[arch]
    modelfile = (tmp_path / "gguf" / "Modelfile").read_text()
    assert f"FROM ./{path.name}" in modelfile and GO_TEMPLATE in modelfile
    assert f"PARAMETER num_ctx {model.cfg.max_seq_len}" in modelfile

    conversations = [json.loads(line) for line in (out / "data" / "val.jsonl").read_text().splitlines()[:8]]
    seqs = [tok.encode(render(c["messages"], c.get("tools")))[:model.cfg.max_seq_len] for c in conversations]
    texts = [render(c["messages"], c.get("tools")) for c in conversations]
    worst, agree, positions, references, largest = 0.0, 0, 0, [], 0.0
    with llama_runtime(path) as llm:
        for text in texts:
            assert llm.tokenize(text.encode(), add_bos=False, special=True) == tok.encode(text)
        for special in [*STOP_STRINGS, "<bos>", "<|im_start|>", "<tool_call>", "</tool_call>"]:
            assert llm.tokenize(special.encode(), add_bos=False, special=True) == [tok.token_id(special)]
        for ids in seqs:
            theirs = cpp_logits(llm, ids)
            with torch.no_grad():
                ours = model(torch.tensor([ids]))[0].numpy()
            worst = max(worst, float(np.abs(theirs - ours).max()))
            agree += int((theirs.argmax(-1) == ours.argmax(-1)).sum())
            references.append(ours.argmax(-1))
            largest = max(largest, float(np.abs(ours).max()))
            positions += len(ids)
    f16 = export_gguf(out / "model_final.pt", tmp_path / "gguf", "f16", modelfile=False).path
    with llama_runtime(f16, f32_cache=False) as llm:  # as users run it: F16 weights and K/V cache
        agree16 = sum(int((cpp_logits(llm, ids).argmax(-1) == reference).sum())
                      for ids, reference in zip(seqs, references, strict=True))
    print(f"\n{arch} ({'tied' if tied else 'untied'}) after 20 steps, GGUF in llama.cpp: f32 max |logit diff| "
          f"{worst:.2e} (logits up to {largest:.1f}), top-1 agreement f32 {agree}/{positions}, "
          f"f16 {agree16}/{positions}")
    assert positions >= 400 and worst <= TOL and agree == positions and agree16 >= 0.99 * positions

    res = runner.invoke(app, ["export", str(out / "model_final.pt"), "--format", "hf", "-o", str(tmp_path / "hf")],
                        catch_exceptions=False)
    assert res.exit_code == 0, res.output
    folder = next((tmp_path / "hf").iterdir())
    back = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(folder)
    worst_hf = 0.0
    for text, ids in zip(texts, seqs, strict=True):
        assert hf_tok.encode(text, add_special_tokens=False) == tok.encode(text)
        with torch.no_grad():
            theirs = back(torch.tensor([ids])).logits[0]
            ours = model(torch.tensor([ids]))[0]
        worst_hf = max(worst_hf, (theirs - ours).abs().max().item())
    print(f"{arch}: Hugging Face export in transformers: max |logit diff| {worst_hf:.2e}")
    assert worst_hf <= TOL
