"""Hugging Face model folders as Codette weights (``codette.checkpoint.hf``, ``codette.tokenizer.hf``).

Offline: tiny random ``LlamaForCausalLM``/``Qwen2ForCausalLM``/``MistralForCausalLM`` models are built with
``transformers`` and saved into ``tmp_path`` as safetensors; Codette's model must give their logits
(fp32, max abs diff <= 1e-4), and what it cannot read must be one clear line.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

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
@pytest.mark.parametrize(("arch", "tied", "cls"), [("qwen2", False, "Qwen2ForCausalLM"),
                                                  ("llama", True, "LlamaForCausalLM")])
def test_an_imported_model_exports_back_to_its_architecture(tmp_path: Path, arch: str, tied: bool, cls: str) -> None:
    """A Codette checkpoint of an imported model (its own tokenizer grown by Codette's special tokens) exports
    as its architecture with the same logits; GGUF refuses Qwen2's q/k/v biases (not written yet)."""
    import dataclasses

    from codette.export import export_gguf, export_hf

    hf = hf_model(tmp_path / "base", arch, tied=tied)
    hf_tokenizer_json(tmp_path / "base", vocab_size=280)
    got = load_hf_tokenizer(tmp_path / "base", model_max_length=128)
    cfg = read_hf_config(tmp_path / "base")
    rows = got.embedding_rows(cfg.vocab_size)
    weights, cfg = grow_vocab(load_hf_weights(tmp_path / "base", cfg), cfg, rows, new_rows=got.added_ids,
                              mean_of=got.base_tokens)
    run = tmp_path / "run"
    run.mkdir()
    got.tokenizer.save(run)
    save_checkpoint({"model": weights, "model_config": dataclasses.asdict(cfg), "step": 0}, run / "model_final.pt")
    out = export_hf(run / "model_final.pt", tmp_path / "exported")
    assert out.architecture == cls
    back = transformers.AutoModelForCausalLM.from_pretrained(out.path, dtype=torch.float32).eval()
    assert type(back).__name__ == cls
    ids = ids_for() % got.base_tokens
    with torch.no_grad():
        assert (back(ids).logits[..., :got.base_tokens] - hf(ids).logits[..., :got.base_tokens]).abs().max() <= TOL
    assert read_hf_config(out.path).qkv_bias == (arch == "qwen2")
    if arch != "qwen2":
        return
    with pytest.raises(CodetteError, match="GGUF export of a model with q/k/v biases .* not supported yet"):
        export_gguf(run / "model_final.pt", tmp_path / "gguf")


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
