"""LoRA fine-tuning with peft (``train.lora_rank``; ``codette.train.lora``, ``codette.checkpoint.lora``).

Offline: the base is a tiny random ``LlamaForCausalLM`` saved with ``transformers`` (and a small tokenizer
trained here), or a tiny random Codette checkpoint. The merged model must equal peft's unmerged one, only
the adapters may learn, a resumed LoRA run must be bit-identical, every loader (eval, chat, export) must read
a LoRA checkpoint as its merged model (its F32 GGUF gives the merged model's logits in llama.cpp), and bad
input must be one line.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from codette.checkpoint import init_weights, load_checkpoint, load_model, save_checkpoint
from codette.checkpoint.lora import adapters_path, fingerprint, merge
from codette.cli import stages
from codette.config import LORA_TARGETS, RunConfig, TrainConfig, build_config
from codette.data.build import ensure_packed
from codette.errors import CodetteError
from codette.fileio import file_sha256
from codette.model import CodetteModel, ModelConfig
from codette.tokenizer import CodetteTokenizer
from codette.tokenizer.bpe import TOKENIZER_FILE
from codette.train.lora import LoraAdapters, inject
from codette.train.trainer import Trainer
from tests._pipeline import QUIET, fresh_run, losses
from tests._runtimes import require

transformers = require("transformers")
peft = require("peft")

RANK, ALPHA = 4, 8.0
TRAIN = {"lr": 3e-3, "warmup_steps": 0, "max_steps": 6, "eval_every": 3, "save_every": 3, "batch_size": 2,
         "eval_batches": 1, "log_every": 1, "probes": 0, "copy_monitor": 0, "dtype": "fp32", "threads": 1, "seed": 5,
         "lora_rank": RANK, "lora_alpha": ALPHA}


def one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert msg and "\n" not in msg
    return msg


def write_base(folder: Path, seed: int = 0) -> None:
    """A random 2-layer Llama (GQA, untied head) and a small byte-level BPE tokenizer, saved as a Hugging Face
    folder. Its norm scales are perturbed so that a wrong mapping could not hide behind ones."""
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(vocab_size=320, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                                   rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=False)
    model = transformers.LlamaForCausalLM(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.2 * torch.randn_like(p))
    model.save_pretrained(folder, safe_serialization=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    texts = ["Hello there, how are you? I am a small model.", "def f(x):\n    return x * 2\n",
             "The weather is calm; the files are in the workspace."] * 20
    tok.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=290, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    tok.save(str(folder / "tokenizer.json"))


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("base") / "TinyLlama"
    write_base(folder)
    return folder


def lora_config(out: Path, base: Path | str, **train: object) -> RunConfig:
    return build_config(None, {"out_dir": str(out), "log_dir": str(out / "logs")}, defaults={
        "data": {"samples": 60, "seed": 0}, "model": {"max_seq_len": 64},
        "train": {**TRAIN, "init_from": str(base), **train}})


@pytest.fixture(scope="module")
def prepared(base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Data (60 conversations) and the base model's tokenizer, in a run folder nothing has trained in."""
    out = tmp_path_factory.mktemp("prepared")
    cfg = lora_config(out, base)
    stages.run_data(cfg, QUIET)
    stages.run_tokenizer(cfg, QUIET)
    return out


@pytest.fixture(scope="module")
def lora_run(prepared: Path, base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 6-step LoRA run on the Llama base (checkpoints at steps 3 and 6)."""
    out = fresh_run(prepared, tmp_path_factory.mktemp("lora_run"))
    stages.run_train(lora_config(out, base), QUIET)
    return out


def trainer_for(cfg: RunConfig, init: bool = True) -> Trainer:
    out = Path(cfg.out_dir)
    tok = CodetteTokenizer.load(out)
    packed = ensure_packed(out, tok, cfg.data.assistant_only_loss)
    return Trainer(cfg.train, stages._model_config(cfg, len(tok)), packed, out,
                   init_from=cfg.train.init_from if init else None, run_config=dataclasses.asdict(cfg),
                   tokenizer_sha256=file_sha256(out / TOKENIZER_FILE))


def ids_for(vocab: int, n: int = 24, batch: int = 2) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, n), generator=torch.Generator().manual_seed(1))


# ---- the adapters: peft's layers, merged by state-dict arithmetic ---------------------------------------------
@pytest.mark.parametrize("style", ["llama", "codette"])
def test_the_merged_model_equals_the_unmerged_one(style: str) -> None:
    cfg = ModelConfig(vocab_size=96, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=32,
                      block_style=style, qkv_bias=style == "llama")
    torch.manual_seed(0)
    model = CodetteModel(cfg).eval()
    base = {k: v.clone() for k, v in model.state_dict().items()}
    adapters = inject(model, TrainConfig(lora_rank=RANK, lora_alpha=ALPHA, init_from="base", seed=1), None)
    want = [t for t in LORA_TARGETS if style == "llama" or t != "gate_proj"]
    assert adapters.targets == want
    wrapped = [n for n, m in model.named_modules() if isinstance(m, peft.tuners.lora.LoraLayer)]
    assert len(wrapped) == cfg.n_layers * len(want)
    ids = ids_for(96)
    with torch.no_grad():
        assert torch.equal(model(ids), _plain(cfg, base)(ids))  # B starts at zero: the base model exactly
        for name, p in model.named_parameters():
            if "lora_B" in name:  # as after some training
                p.normal_(0.0, 0.5)
        unmerged = model(ids)
    state = LoraAdapters.state(model)
    assert set(state) == {f"{n}.lora_{ab}.weight" for n in wrapped for ab in "AB"}
    merged = merge(base, state, RANK, ALPHA)
    for name in wrapped:  # peft's own delta (LoraLayer.get_delta_weight) is what merge adds
        layer = model.get_submodule(name)
        want_w = layer.base_layer.weight + layer.get_delta_weight("default")
        assert torch.allclose(merged[name + ".weight"], want_w, atol=1e-6, rtol=0)
    plain = _plain(cfg, merged)
    with torch.no_grad():
        got = plain(ids)
        diff = (unmerged - got).abs().max().item()
        assert diff <= 1e-5, diff
        assert (unmerged - _plain(cfg, base)(ids)).abs().max().item() > 1e-2  # the adapters do change the logits
        # Decoding one token at a time (the KV cache's path computes q, k and v apart) goes through them too.
        cache = model.new_cache(batch=2)
        model(ids[:, :-2], cache=cache)
        steps = torch.cat([model(ids[:, i : i + 1], cache=cache) for i in (ids.shape[1] - 2, ids.shape[1] - 1)], 1)
        assert (steps - got[:, -2:]).abs().max().item() <= 1e-5


def _plain(cfg: ModelConfig, weights: dict[str, torch.Tensor]) -> CodetteModel:
    model = CodetteModel(cfg).eval()
    model.load_state_dict(weights)
    return model


def test_the_same_seed_gives_the_same_adapters_whatever_ran_before() -> None:
    cfg = ModelConfig(vocab_size=64, d_model=32, n_layers=1, n_heads=4, max_seq_len=16, block_style="llama")
    states = []
    for seed, draws in ((3, 0), (3, 5), (4, 0)):
        model = CodetteModel(cfg)
        torch.rand(draws)  # the global generator elsewhere
        before = torch.get_rng_state()
        inject(model, TrainConfig(lora_rank=RANK, init_from="base", seed=seed), None)
        assert torch.equal(torch.get_rng_state(), before)  # the run's own random stream is left alone
        states.append(LoraAdapters.state(model))
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    a = "blocks.0.attn.q_proj.lora_A.weight"
    assert not torch.equal(states[0][a], states[2][a])
    assert TrainConfig(lora_rank=8, init_from="b").lora_alpha_value == 16.0  # alpha's default: twice the rank


# ---- training: only the adapters learn ------------------------------------------------------------------------
def test_only_adapter_parameters_get_gradients_and_optimizer_state(prepared: Path, base: Path, tmp_path: Path) -> None:
    out = fresh_run(prepared, tmp_path)
    trainer = trainer_for(lora_config(out, base))
    model = trainer.model
    names = {n for n, _ in model.named_parameters()}
    adapters = {n for n in names if ".lora_" in n}
    assert adapters and len(adapters) == 2 * 2 * 7  # 2 layers x 7 projections x (A, B)
    optimised = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert optimised == {id(p) for n, p in model.named_parameters() if n in adapters}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    x, y = trainer.sampler.batch(0, 2)
    model(x, y).loss_sum.backward()
    got = {n for n, p in model.named_parameters() if p.grad is not None}
    assert got == {n for n in adapters if "lora_B" in n} | {n for n in adapters if "lora_A" in n}
    model.zero_grad(set_to_none=True)
    trainer.wrap()
    trainer.train_step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == adapters
    state = trainer.state_dict()
    moments = [t for s in state["optimizer"]["state"].values() for k, t in s.items() if k != "step"]
    n_adapters = sum(p.numel() for n, p in model.named_parameters() if n in adapters)
    assert sum(t.numel() for t in moments) == 2 * n_adapters  # exp_avg and exp_avg_sq of the adapters alone
    assert set(state["model"]) == {n.replace(".default", "") for n in adapters}
    assert state["lora"]["base"] == str(base.resolve()) and state["lora"]["base_fingerprint"] == fingerprint(base)


# ---- checkpoints: the adapters beside the checkpoint, exact resume ----------------------------------------
def test_a_lora_checkpoint_holds_the_adapters_beside_it_not_the_base(lora_run: Path, base: Path) -> None:
    for name in ("model_step_3", "model_final", "model_best"):
        pt, st = lora_run / f"{name}.pt", lora_run / f"{name}.lora.safetensors"
        assert pt.is_file() and st.is_file(), name
        raw = torch.load(pt, map_location="cpu", weights_only=True)
        assert "model" not in raw and raw["lora"]["adapters"] == st.name
        assert {raw["lora"][k] for k in ("rank", "alpha")} == {RANK, ALPHA}
    from safetensors import safe_open

    with safe_open(str(lora_run / "model_final.lora.safetensors"), framework="pt") as fh:
        meta, keys = fh.metadata(), list(fh.keys())
    assert meta["format"] == "codette-lora-v1" and json.loads(meta["base"]) == str(base.resolve())
    assert json.loads(meta["targets"]) == list(LORA_TARGETS) and json.loads(meta["step"]) == 6
    assert len(keys) == 28 and all(".lora_A." in k or ".lora_B." in k for k in keys)
    base_bytes = (base / "model.safetensors").stat().st_size
    assert (lora_run / "model_final.lora.safetensors").stat().st_size < base_bytes / 5
    assert (lora_run / "model_final.pt").stat().st_size < base_bytes / 2  # moments of the adapters only


def test_pruning_a_step_checkpoint_removes_its_adapters_file(lora_run: Path, tmp_path: Path) -> None:
    from codette.checkpoint import prune_step_checkpoints

    for step in (3, 6, 9):
        for suffix in (".pt", ".lora.safetensors"):
            shutil.copy(lora_run / f"model_step_3{suffix}", tmp_path / f"model_step_{step}{suffix}")
    prune_step_checkpoints(tmp_path, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "model_step_6.lora.safetensors", "model_step_6.pt", "model_step_9.lora.safetensors", "model_step_9.pt"]


def test_a_resumed_lora_run_is_bit_identical(lora_run: Path, prepared: Path, base: Path, tmp_path: Path) -> None:
    part = fresh_run(prepared, tmp_path, "part")
    for name in ("model_step_3.pt", "model_step_3.lora.safetensors"):
        shutil.copy(lora_run / name, part / name)
    stages.run_train(lora_config(part, base), QUIET, resume=str(part / "model_step_3.pt"))
    a, b = losses(lora_run / "logs"), losses(part / "logs")
    assert sorted(a) == list(range(1, 7)) and sorted(b) == [4, 5, 6]
    assert all(a[s] == b[s] for s in b), [(s, a[s], b[s]) for s in b]
    fa = load_checkpoint(lora_run / "model_final.pt", merge_lora=False)
    fb = load_checkpoint(part / "model_final.pt", merge_lora=False)
    assert set(fa["model"]) == set(fb["model"])
    assert all(torch.equal(fa["model"][k], fb["model"][k]) for k in fa["model"])
    ma, mb = load_checkpoint(lora_run / "model_final.pt")["model"], load_checkpoint(part / "model_final.pt")["model"]
    assert all(torch.equal(ma[k], mb[k]) for k in ma)
    # Another rank, or a full run, does not resume a LoRA checkpoint (nor LoRA a full one).
    with pytest.raises(CodetteError, match=r"cannot resume from .*model_step_3\.pt: train\.lora_rank=4 there but 8 in "
                                           r"this run$"):
        stages.run_train(lora_config(part, base, lora_rank=8, lora_alpha=None), QUIET,
                         resume=str(part / "model_step_3.pt"))


# ---- every reader takes the merged model ----------------------------------------------------------------------
def test_eval_chat_and_export_read_a_lora_run_as_its_merged_model(lora_run: Path, base: Path, tmp_path: Path) -> None:
    from codette.backends.local import LocalBackend
    from codette.export import export_hf
    from codette.export.source import open_checkpoint

    final = lora_run / "model_final.pt"
    model, state = load_model(final)
    assert type(model) is CodetteModel and state["step"] == 6
    assert not any(isinstance(m, peft.tuners.lora.LoraLayer) for m in model.modules())  # a plain model
    # The merged model computes what the trained (unmerged) one does.
    trainer = trainer_for(lora_config(lora_run, base), init=False)
    trainer.load_state_dict(trainer.checkpoints.load(final, trainer.model_cfg))
    vocab = model.cfg.vocab_size
    ids = ids_for(vocab)
    _, raw_base = init_weights(base, model.cfg, None)
    with torch.no_grad():
        unmerged = trainer.model.eval()(ids)
        merged = model(ids)
        assert (unmerged - merged).abs().max().item() <= 1e-5
        assert (_plain(model.cfg, raw_base)(ids) - merged).abs().max().item() > 1e-4  # the adapters count
    # What the exporters read (GGUF and Hugging Face alike): the merged weights.
    src = open_checkpoint(final)
    assert all(torch.equal(src.weights[k], v) for k, v in model.state_dict().items())
    # `codette eval/chat/ask/serve` load through LocalBackend.
    backend = LocalBackend.from_checkpoint(final)
    assert torch.equal(backend.model.blocks[0].attn.q_proj.weight, model.blocks[0].attn.q_proj.weight)
    # The Hugging Face export loads in transformers and computes the merged model's logits.
    out = export_hf(final, tmp_path / "hf")
    hf = transformers.AutoModelForCausalLM.from_pretrained(out.path, dtype=torch.float32).eval()
    with torch.no_grad():
        assert (hf(ids).logits - merged).abs().max().item() <= 1e-4


def test_lora_on_a_codette_checkpoint(prepared: Path, tmp_path: Path) -> None:
    """A tiny Codette model (codette blocks: no gate_proj) as the base; a changed base is refused by name."""
    out = fresh_run(prepared, tmp_path)
    tok = CodetteTokenizer.load(out)
    shape = {"preset": "tiny", "d_model": 32, "n_layers": 2, "n_heads": 4, "max_seq_len": 64}
    probe = build_config(None, {"out_dir": str(out)}, defaults={"model": shape})
    model_cfg = stages._model_config(probe, len(tok))
    torch.manual_seed(0)
    base = tmp_path / "base" / "model_final.pt"
    sha = file_sha256(out / TOKENIZER_FILE)
    save_checkpoint({"model": CodetteModel(model_cfg).state_dict(), "model_config": dataclasses.asdict(model_cfg),
                     "step": 9, "tokenizer_sha256": sha}, base)
    cfg = build_config(None, {"out_dir": str(out), "log_dir": str(out / "logs")}, defaults={
        "data": {"samples": 60}, "model": shape,
        "train": {**TRAIN, "max_steps": 2, "eval_every": 2, "save_every": 2, "init_from": str(base.parent)}})
    stages.run_train(cfg, QUIET)
    state = load_checkpoint(out / "model_final.pt", merge_lora=False)
    assert state["lora"]["targets"] == ["q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj"]
    assert state["lora"]["base"] == str(base.resolve())  # the run folder's model file, by absolute path
    merged, _ = load_model(out / "model_final.pt")
    assert not torch.equal(merged.blocks[0].mlp.up_proj.weight, load_model(base)[0].blocks[0].mlp.up_proj.weight)
    assert torch.equal(merged.blocks[0].attn_norm.weight, load_model(base)[0].blocks[0].attn_norm.weight)
    # --init-from a LoRA run (a full fine-tune, or another LoRA, on top) starts from its merged weights.
    source, weights = init_weights(out, merged.cfg, sha)
    assert source == out / "model_best.pt" and all(torch.equal(weights[k], v) for k, v in
                                                   load_model(source)[0].state_dict().items())
    # gate_proj is a llama block's: this model has none.
    with pytest.raises(CodetteError) as exc:
        trainer_for(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, lora_targets=["gate_proj"])))
    assert one_line(exc) == ("train.lora_targets: 'gate_proj' is not a projection of this model's codette blocks; "
                             "they have q_proj, k_proj, v_proj, o_proj, up_proj, down_proj")
    # Another base under the same name: the adapters no longer fit it.
    torch.manual_seed(1)
    save_checkpoint({"model": CodetteModel(model_cfg).state_dict(), "model_config": dataclasses.asdict(model_cfg),
                     "step": 9, "tokenizer_sha256": sha}, base)
    with pytest.raises(CodetteError) as exc:
        load_model(out / "model_final.pt")
    assert one_line(exc).startswith(f"{out / 'model_final.pt'}: its LoRA base {base.resolve()} has changed since the "
                                    f"adapters were trained on it (fingerprint ")
    base.unlink()
    with pytest.raises(CodetteError, match=r"its LoRA base .*model_final\.pt is gone \(the adapters were trained on "
                                           r"it; the checkpoint does not copy it\); put it back there$"):
        stages.run_train(cfg, QUIET, resume="auto")


# ---- bad input: one line each ---------------------------------------------------------------------------------
def test_a_lora_run_without_peft_says_how_to_install_it(prepared: Path, base: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    out = fresh_run(prepared, tmp_path)
    monkeypatch.setitem(sys.modules, "peft", None)  # `import peft` raises ImportError
    with pytest.raises(CodetteError) as exc:
        stages.run_train(lora_config(out, base), QUIET)
    assert one_line(exc) == ("train.lora_rank=4 needs the peft library, which is not installed: "
                             "pip install 'codette[lora]'")
    assert not list(out.glob("model_*"))


def test_lora_flags_and_bad_values_are_one_line(tmp_path: Path, base: Path) -> None:
    from typer.testing import CliRunner

    from codette.cli import main

    seen: list[RunConfig] = []

    def record(cfg: RunConfig, console: object, resume: str | None = None) -> None:
        seen.append(cfg)

    runner = CliRunner()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(stages, "run_train_stages", record)
        res = runner.invoke(main.app, ["train", "-o", str(tmp_path), "--init-from", str(base), "--lora-rank", "16",
                                       "--lora-alpha", "8", "--lora-targets", "q_proj, v_proj"])
        assert res.exit_code == 0, res.output
        train = seen[0].train
        assert (train.lora_rank, train.lora_alpha, train.lora_targets) == (16, 8.0, ["q_proj", "v_proj"])
        for flags, said in [
            (["--lora-rank", "4", "--lora-targets", "qproj"],
             "config key 'train.lora_targets': expected distinct names from q_proj, k_proj, v_proj, o_proj, "
             "gate_proj, up_proj, down_proj or none (every one the model has), got ['qproj']"),
            (["--lora-rank", "-1"], "config key 'train.lora_rank': expected an integer >= 0, got -1"),
            (["--lora-rank", "4", "--lora-alpha", "0"],
             "config key 'train.lora_alpha': expected a finite number > 0 or none (2 x train.lora_rank), got 0.0"),
            (["--lora-alpha", "8"], "config key 'train.lora_alpha' is set but 'train.lora_rank' is 0 (LoRA off); "
                                    "set a rank or remove it"),
        ]:
            res = runner.invoke(main.app, ["train", "-o", str(tmp_path), "--init-from", str(base), *flags])
            assert isinstance(res.exception, CodetteError) and str(res.exception) == said, (flags, res.exception)
        res = runner.invoke(main.app, ["train", "-o", str(tmp_path), "--lora-rank", "4"])
        assert str(res.exception) == ("config key 'train.lora_rank': LoRA trains adapters on a base model's frozen "
                                      "weights; name it with 'train.init_from' (--init-from)")


def test_a_lora_checkpoint_whose_adapters_or_base_changed_is_refused(lora_run: Path, base: Path,
                                                                     tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(lora_run, run)
    final = run / "model_final.pt"
    shutil.copy(run / "model_step_3.lora.safetensors", adapters_path(final))  # another save's adapters
    with pytest.raises(CodetteError) as exc:
        load_model(final)
    assert one_line(exc) == (f"{adapters_path(final)} is not the adapters file of model_final.pt (sha256 differs: "
                             f"another save replaced it, or the write was interrupted); use another checkpoint")
    adapters_path(final).unlink()
    with pytest.raises(CodetteError, match=r"model_final\.pt is a LoRA checkpoint but its adapters file model_final"
                                           r"\.lora\.safetensors is missing \(copy it with the checkpoint\)$"):
        load_model(final)
    from codette.checkpoint import latest_valid_checkpoint

    assert latest_valid_checkpoint(run) == run / "model_step_3.pt"  # the broken final pair is skipped
    # The base model re-saved with other weights: every reader refuses the adapters.
    moved = tmp_path / "base"
    shutil.copytree(base, moved)
    write_base(base, seed=1)
    try:
        with pytest.raises(CodetteError) as exc:
            load_model(run / "model_step_3.pt")
        assert f"its LoRA base {base.resolve()} has changed since the adapters were trained on it" in one_line(exc)
    finally:
        shutil.rmtree(base)
        shutil.copytree(moved, base)
    assert load_model(run / "model_step_3.pt")[0].cfg.n_layers == 2  # the same base again: accepted


def test_lora_targets_are_the_models_projection_names() -> None:
    """config.LORA_TARGETS (config cannot import the model) names exactly the Linear layers of the blocks."""
    cfg = ModelConfig(vocab_size=64, d_model=32, n_layers=1, n_heads=4, max_seq_len=16, block_style="llama")
    names = {n.rsplit(".", 1)[-1] for n, m in CodetteModel(cfg).blocks.named_modules()
             if isinstance(m, torch.nn.Linear)}
    assert names == set(LORA_TARGETS)


# ---- end to end: the CLI stages, a GGUF, llama.cpp ------------------------------------------------------------
@pytest.mark.slow
def test_a_lora_run_exported_to_gguf_runs_in_llama_cpp_as_its_merged_model(tmp_path: Path) -> None:
    """`codette data`, `tokenizer` and `train` (LoRA on a random Llama folder with its own byte-level BPE tokenizer,
    grown by Codette's special tokens), then `codette export --quant f32`: llama.cpp tokenizes held-out
    conversations as Codette does and computes the merged model's logits (top-1 equal at every position), and
    those are far from the base model's, so the adapters are in the file."""
    import numpy as np
    from typer.testing import CliRunner

    from codette.cli.main import app
    from codette.tokenizer import render
    from tests.test_hf_import import cpp_logits, hf_model, hf_tokenizer_json, llama_runtime

    base = tmp_path / "base"
    hf_model(base, "llama", tied=False)  # logits of order 1: the bounds below mean something
    hf_tokenizer_json(base)
    out, cfg = tmp_path / "run", tmp_path / "c.json"
    steps = 8
    cfg.write_text(json.dumps({"data": {"samples": 60, "seed": 0}, "model": {"max_seq_len": 96},
                               "train": {**TRAIN, "max_steps": steps, "eval_every": steps, "save_every": steps,
                                         "batch_size": 4, "init_from": str(base)}}))
    runner = CliRunner()
    for verb in ("data", "tokenizer", "train"):
        res = runner.invoke(app, [verb, "-c", str(cfg), "-o", str(out)], catch_exceptions=False)
        assert res.exit_code == 0, res.output
    final = out / "model_final.pt"
    raw = load_checkpoint(final, merge_lora=False)
    assert raw["step"] == steps and (raw["lora"]["rank"], raw["lora"]["alpha"]) == (RANK, ALPHA)
    assert set(raw["model"]) and all(".lora_" in k for k in raw["model"])  # a LoRA run: adapters only
    model, _ = load_model(final)  # the merged model
    _, base_weights = init_weights(base, model.cfg, None)  # the base, its embedding grown the same way
    before = _plain(model.cfg, base_weights)

    res = runner.invoke(app, ["export", str(final), "--quant", "f32", "-o", str(tmp_path / "gguf")],
                        catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "GGUF (llama, f32)" in res.output
    path = next((tmp_path / "gguf").glob("*.gguf"))

    tok = CodetteTokenizer.load(out)
    conversations = [json.loads(line) for line in (out / "data" / "val.jsonl").read_text().splitlines()[:8]]
    texts = [render(c["messages"], c.get("tools")) for c in conversations]
    worst, shift, agree, positions, largest = 0.0, 0.0, 0, 0, 0.0
    with llama_runtime(path) as llm:
        for text in texts:
            ids = tok.encode(text)
            assert llm.tokenize(text.encode(), add_bos=False, special=True) == ids
            ids = ids[:model.cfg.max_seq_len]
            theirs = cpp_logits(llm, ids)
            with torch.no_grad():
                ours = model(torch.tensor([ids]))[0].numpy()
                start = before(torch.tensor([ids]))[0].numpy()
            worst = max(worst, float(np.abs(theirs - ours).max()))
            shift = max(shift, float(np.abs(theirs - start).max()))
            agree += int((theirs.argmax(-1) == ours.argmax(-1)).sum())
            largest = max(largest, float(np.abs(ours).max()))
            positions += len(ids)
    print(f"\nLoRA (rank {RANK}, {steps} steps) GGUF f32 in llama.cpp: max |logit diff| from the merged model "
          f"{worst:.2e}, from the base model {shift:.2e} (logits up to {largest:.1f}); top-1 agreement "
          f"{agree}/{positions}")
    assert positions >= 400 and agree == positions and worst <= 1e-4
    assert shift >= 1e-1 and shift >= 1000 * worst  # the adapters moved the logits far beyond llama.cpp's error
