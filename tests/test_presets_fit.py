"""The memory planner (`codette presets --fit`): its formulas by hand, its choice, and torch's own figures."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from codette.model import CodetteModel, ModelConfig, count_parameters
from codette.model.flops import gpu_bf16_peak, matmul_parameters, model_flops_per_token
from codette.model.memory import (
    GIB,
    USABLE_FRACTION,
    block_activation_bytes,
    block_parameters,
    fit,
    fit_rows,
    head_activation_bytes,
    lora_parameters,
    plan,
)
from codette.model.presets import preset_config

TINY_PARAMS = 4096 * 256 + 6 * (2 * 256 + 4 * 256 * 256 + 2 * 256 * 1024) + 256  # = 5,770,496


def test_tiny_preset_by_hand_one_gpu_bf16() -> None:
    cfg = preset_config("tiny")
    p = plan(cfg, "single", 1, batch=8, seq_len=512, dtype="bf16")
    assert TINY_PARAMS == 5_770_496
    assert (p.weights, p.grads, p.adamw) == (23_081_984, 23_081_984, 46_163_968)
    assert p.weight_copies == 2 * (5_770_496 - 13 * 256) == 11_534_336  # every matrix, cast once
    # per block per token: norms 2*(4*256 + 2*256) + attention 2*768 + 2*512 + 2*256 + MLP 4*1024 = 10,240 B
    # head per token: norm 1,536 + logits 2*4096 + 3 fp32 tensors of 4096 = 58,880 B; 4,096 tokens
    assert p.activations == 4096 * (6 * 10_240 + 58_880) == 492_830_720
    # checkpointed: each block keeps its fp32 input (1,024 B/token), one block is recomputed at a time
    assert p.activations_checkpointed == 4096 * (6 * 1024 + 10_240 + 58_880)
    assert p.total() == p.weights + p.grads + p.adamw + p.weight_copies + p.activations


def test_tiny_preset_by_hand_sharded_and_ddp() -> None:
    cfg = preset_config("tiny")
    block = 2 * 256 + 4 * 256 * 256 + 2 * 256 * 1024
    assert block_parameters(cfg) == block == 786_944
    f = plan(cfg, "fsdp", 4, batch=8, seq_len=512)
    assert (f.weights, f.grads, f.adamw) == (4 * TINY_PARAMS // 4, 4 * TINY_PARAMS // 4, 8 * TINY_PARAMS // 4)
    root = 4096 * 256 + 256
    assert f.weight_copies == 2 * (root + 2 * block) + 4 * block
    # FSDP2's bf16 parameters make the residual stream bf16 too: 2 bytes where autocast keeps 4
    assert block_activation_bytes(cfg, 1, a=2, r=2) == 2 * (2 * 256 + 2 * 256) + 3072 + 4096
    d = plan(cfg, "ddp", 4, batch=8, seq_len=512)
    assert d.grads == 8 * TINY_PARAMS and d.weights == 4 * TINY_PARAMS  # DDP's buckets copy the gradients
    assert plan(cfg, dtype="fp32").weight_copies == 4 * 6 * 256 * 768  # fp32: the concatenated q/k/v weights


def test_flops_per_token_by_hand() -> None:
    cfg = preset_config("tiny")
    assert matmul_parameters(cfg) == TINY_PARAMS - 13 * 256
    assert model_flops_per_token(cfg, 512) == 6 * (TINY_PARAMS - 13 * 256) + 12 * 6 * 512 * 256


def test_fit_picks_the_largest_batch_that_fits() -> None:
    cfg = preset_config("1.3b")
    budget = 80 * GIB * USABLE_FRACTION
    f = fit(cfg, 80, "single", 1)
    assert f.seq_len == 2048 and f.batch >= 1
    assert plan(cfg, "single", 1, f.batch, 2048).total() <= budget < plan(cfg, "single", 1, 2 * f.batch, 2048).total()
    assert f.batch_checkpointed > f.batch  # checkpointing trades recompute for a bigger batch
    big = preset_config("5.3b")
    assert fit(big, 80, "single", 1).batch == 0  # 16 bytes per parameter alone exceed 80 GB
    sharded = fit(big, 80, "fsdp", 8)
    assert sharded.batch >= 1 and sharded.plan.adamw == 8 * count_parameters(big) // 8


def test_presets_fit_cli_table_and_json() -> None:
    run = [sys.executable, "-m", "codette", "presets", "--fit", "80", "--gpus", "8"]
    proc = subprocess.run(run + ["--json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    by = {(r["preset"], r["mode"]): r for r in rows}
    assert by[("5.3b", "ddp")]["batch"] == 0 and by[("5.3b", "fsdp")]["batch"] >= 1
    expect = fit(preset_config("1.3b"), 80, "fsdp", 8)
    assert (by[("1.3b", "fsdp")]["batch"], by[("1.3b", "fsdp")]["seq_len"]) == (expect.batch, expect.seq_len)
    table = subprocess.run(run, capture_output=True, text=True, timeout=120)
    assert table.returncode == 0 and "fsdp" in table.stdout and "5.3b" in table.stdout
    bad = subprocess.run([sys.executable, "-m", "codette", "presets", "--fit", "0"], capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 2 and "--fit" in bad.stderr


def _saved_bytes(model: CodetteModel, x: torch.Tensor, bf16: bool) -> tuple[int, int]:
    """(bytes of the activations autograd keeps for the backward, bytes of the bf16 weight copies it keeps)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    params |= {b.untyped_storage().data_ptr() for b in model.buffers()}
    weight_shapes = {tuple(p.shape) for p in model.parameters() if p.dim() == 2}
    weight_shapes.add((3 * model.cfg.d_model, model.cfg.d_model))  # q, k and v are multiplied at once
    weight_shapes |= {(cols, rows) for rows, cols in weight_shapes}  # saved transposed
    acts: dict[int, int] = {}
    copies: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            kind = copies if tuple(t.shape) in weight_shapes else acts
            kind[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            model(x, x)
    return sum(acts.values()), sum(copies.values())


@pytest.mark.parametrize("style", ["codette", "llama"])
@pytest.mark.parametrize("bf16", [False, True])
def test_block_estimate_matches_what_torch_saves_on_cpu(style: str, bf16: bool) -> None:
    """The per-block estimate against the tensors autograd really keeps (two models, one block apart)."""
    measured, copies = [], []
    for layers in (1, 2):
        cfg = ModelConfig(vocab_size=256, d_model=128, n_layers=layers, n_heads=4, max_seq_len=128,
                          block_style=style, d_ff=384)
        torch.manual_seed(0)
        model = CodetteModel(cfg).train()
        acts, cp = _saved_bytes(model, torch.randint(0, 256, (2, 96)), bf16)  # 192 tokens: no shape of a weight
        measured.append(acts)
        copies.append(cp)
    a = 2 if bf16 else 4
    estimate = block_activation_bytes(cfg, 2 * 96, a=a, r=4)
    per_block = measured[1] - measured[0]
    assert abs(per_block - estimate) <= 0.05 * estimate, (per_block, estimate)
    if bf16:  # autocast's bf16 weight copies: 2 bytes per matrix parameter
        assert copies[1] - copies[0] == 2 * (block_parameters(cfg) - 2 * 128)  # all but its two norm scales
        assert copies[1] == plan(cfg, dtype="bf16").weight_copies == 2 * matmul_parameters(cfg)
    else:  # fp32: only the concatenated q/k/v weights
        assert copies[1] == plan(cfg, dtype="fp32").weight_copies == 2 * 4 * 128 * 3 * 128
    # what the head keeps for the backward (the final norm and the log-probabilities) is inside the estimate
    head_saved = measured[0] - estimate
    assert 0 < head_saved <= head_activation_bytes(cfg, 2 * 96, a=a, r=4)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_plan_against_cuda_peak_memory() -> None:
    """One bf16 training step's peak memory on the GPU against the one-GPU plan (an upper bound, 15% slack)."""
    from codette.config import TrainConfig
    from codette.train.device import autocast_for
    from codette.train.schedule import build_optimizer
    from codette.train.step import accumulate_gradients

    cuda = torch.device("cuda")
    cfg = ModelConfig(vocab_size=8192, d_model=512, n_layers=8, n_heads=8, max_seq_len=1024)
    model = CodetteModel(cfg).to(cuda)
    opt = build_optimizer(model, TrainConfig(), fused=True)
    x = torch.randint(0, 8192, (8, 1024), device=cuda)
    for _ in range(2):  # the second step has the AdamW state
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        accumulate_gradients(model, [(x, x)], x.numel(), cuda, autocast_for(cuda, "bf16"))
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    expected = plan(cfg, "single", 1, 8, 1024, "bf16").total()
    # The plan adds every term at once; in a real step some are freed before others are made.
    assert 0.6 * expected <= peak <= 1.15 * expected, (peak, expected)


# ---- LoRA (train.lora_rank): the base without gradients or moments ----------------------------------------------
def test_lora_plan_by_hand() -> None:
    cfg = preset_config("tiny")  # codette blocks: q, k, v, o (256 x 256), up and down (256 <-> 1024); no gate
    n_lora = 6 * 8 * (4 * (256 + 256) + 2 * (256 + 1024))
    assert lora_parameters(cfg, 8) == n_lora == 221_184
    assert lora_parameters(cfg, 8, ["q_proj", "v_proj"]) == 6 * 8 * 2 * 512
    full, lora = plan(cfg, batch=8, seq_len=512), plan(cfg, batch=8, seq_len=512, lora_rank=8)
    assert (lora.trainable, full.trainable) == (n_lora, TINY_PARAMS)
    assert lora.weights == 4 * (TINY_PARAMS + n_lora)  # the frozen base stays in fp32, the adapters beside it
    assert (lora.grads, lora.adamw) == (4 * n_lora, 8 * n_lora)
    assert lora.weight_copies == full.weight_copies + 2 * n_lora  # autocast casts the adapters too
    assert (lora.activations, lora.activations_checkpointed) == (full.activations, full.activations_checkpointed)
    assert plan(cfg, "ddp", 4, lora_rank=8).grads == 2 * 4 * n_lora  # DDP's buckets: the adapters' gradients only
    # fp32: once q, k or v is adapted each is applied apart, so no concatenated q/k/v weights are kept
    assert plan(cfg, dtype="fp32", lora_rank=8).weight_copies == 0
    only_o = plan(cfg, dtype="fp32", lora_rank=8, lora_targets=["o_proj"])
    assert only_o.weight_copies == plan(cfg, dtype="fp32").weight_copies
    with pytest.raises(ValueError, match="not sharded"):
        plan(cfg, "fsdp", 4, lora_rank=8)
    with pytest.raises(ValueError, match="'gate_proj' is not a projection of codette blocks"):
        lora_parameters(cfg, 8, ["gate_proj"])


@pytest.mark.parametrize("targets", [None, ["q_proj", "k_proj", "gate_proj", "down_proj"]])
def test_lora_parameters_are_what_peft_adds(targets: list[str] | None) -> None:
    pytest.importorskip("peft")
    from codette.config import TrainConfig
    from codette.train.lora import inject

    cfg = ModelConfig(vocab_size=128, d_model=64, n_layers=3, n_heads=4, n_kv_heads=2, max_seq_len=32,
                      block_style="llama", d_ff=160, qkv_bias=True)
    model = CodetteModel(cfg)
    inject(model, TrainConfig(lora_rank=4, lora_targets=targets, init_from="base"), None)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == lora_parameters(cfg, 4, targets) == plan(cfg, lora_rank=4, lora_targets=targets).trainable
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    assert frozen == count_parameters(cfg)


def _smollm2_360m(tmp_path) -> Path:
    """A folder with SmolLM2-360M's config.json (no weights: the planner reads the shape only)."""
    folder = tmp_path / "SmolLM2-360M"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "hidden_size": 960, "num_hidden_layers": 32, "num_attention_heads": 15,
        "num_key_value_heads": 5, "intermediate_size": 2560, "vocab_size": 49152, "tie_word_embeddings": True,
        "rope_theta": 100000, "rms_norm_eps": 1e-5, "max_position_embeddings": 8192}))
    return folder


def test_presets_fit_plans_a_hugging_face_config_with_lora(tmp_path) -> None:
    from codette.checkpoint.hf import read_hf_config

    folder = _smollm2_360m(tmp_path)
    run = [sys.executable, "-m", "codette", "presets", "--fit", "80", "--model", str(folder / "config.json"),
           "--lora-rank", "16", "--seq-len", "2048", "--json"]
    proc = subprocess.run(run, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    full, lora = json.loads(proc.stdout)
    assert (full["preset"], full["lora_rank"], lora["lora_rank"]) == ("SmolLM2-360M", 0, 16)
    cfg = read_hf_config(folder)
    assert full["params"] == full["trainable"] == count_parameters(cfg) == 361_821_120  # SmolLM2-360M's published size
    assert lora["trainable"] == lora_parameters(cfg, 16) == 32 * 16 * (2 * 1920 + 2 * 1280 + 3 * 3520) == 8_683_520
    assert lora["adamw"] == 8 * lora["trainable"] and full["adamw"] == 8 * full["params"]
    assert lora["act_per_seq"] == full["act_per_seq"] and full["seq_len"] <= 2048
    short = fit(dataclasses.replace(cfg, max_seq_len=2048), 80, "single", 1, lora_rank=16)
    assert (lora["batch"], lora["seq_len"]) == (short.batch, short.seq_len)
    cpu = subprocess.run(run[:5] + ["32", "--cpu"] + run[6:-1], capture_output=True, text=True, timeout=120)
    assert cpu.returncode == 0 and "Training on the CPU with 32 GB of memory (fp32)" in cpu.stdout, cpu.stderr
    for bad, said in [(["--fit", "80", "--model", str(tmp_path)], f"{tmp_path} has no config.json"),
                      (["--lora-rank", "8"], "--lora-rank plans a training run: it needs --fit GB"),
                      (["--fit", "80", "--model", str(folder), "--lora-rank", "4", "--lora-targets", "gate"],
                       "LoRA target 'gate' is not a projection of llama blocks")]:
        proc = subprocess.run([sys.executable, "-m", "codette", "presets", *bad], capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 2 and said in " ".join(proc.stderr.split()), (bad, proc.stderr)


# ---- time: FLOPs per token over an assumed achieved FLOP/s ------------------------------------------------------
def test_fit_rows_time_is_achieved_flops_over_flops_per_token() -> None:
    cfg = dataclasses.replace(preset_config("tiny", block_style="llama"), max_seq_len=512)
    achieved = 100e12
    full, lora = fit_rows(80, model=cfg, lora_rank=8, achieved_flops=achieved)
    assert full["flops_per_token"] == model_flops_per_token(cfg, 512)
    assert lora["flops_per_token"] == model_flops_per_token(cfg, 512, n_lora=lora_parameters(cfg, 8)) \
        < full["flops_per_token"]
    for r in (full, lora):
        assert r["tokens_per_s"] == pytest.approx(achieved / r["flops_per_token"])
        assert r["hours_per_100m_tokens"] == pytest.approx(1e8 / r["tokens_per_s"] / 3600)
    assert lora["hours_per_100m_tokens"] < full["hours_per_100m_tokens"]
    four = fit_rows(80, gpus=4, model=cfg, achieved_flops=achieved)  # DDP and FSDP2: four GPUs' worth of tokens
    assert [r["tokens_per_s"] for r in four] == pytest.approx([4 * full["tokens_per_s"]] * 2)
    assert fit_rows(80, model=cfg)[0]["hours_per_100m_tokens"] is None  # no achieved FLOP/s, no time
    with pytest.raises(ValueError, match="achieved FLOP/s"):
        fit_rows(80, model=cfg, achieved_flops=-1.0)


def test_presets_fit_estimates_the_training_time(tmp_path) -> None:
    folder = _smollm2_360m(tmp_path)
    base = [sys.executable, "-m", "codette", "presets", "--fit", "80", "--model", str(folder), "--lora-rank", "16",
            "--seq-len", "2048"]

    def rows(*extra: str) -> list[dict]:
        proc = subprocess.run([*base, *extra, "--json"], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    full, lora = rows()  # one H100 (the default --gpu), MFU 40% (the default on a GPU)
    assert (full["peak_flops"], full["mfu"]) == (gpu_bf16_peak("H100"), 0.4) and "spec-sheet" in full["peak_source"]
    assert full["tokens_per_s"] == pytest.approx(0.4 * gpu_bf16_peak("H100") / full["flops_per_token"])
    assert lora["hours_per_100m_tokens"] < full["hours_per_100m_tokens"]  # LoRA: no weight gradients of the base
    doubled = rows("--mfu", "0.8")
    for before, after in zip((full, lora), doubled):
        assert after["hours_per_100m_tokens"] == pytest.approx(before["hours_per_100m_tokens"] / 2)
    a100 = rows("--gpu", "A100")[0]
    assert a100["tokens_per_s"] == pytest.approx(full["tokens_per_s"] * gpu_bf16_peak("A100") / gpu_bf16_peak("H100"))
    cpu_full, cpu_lora = rows("--cpu")  # this machine's fp32 matmul, measured: only its relations are checked
    assert cpu_full["mfu"] == 0.5 and cpu_full["peak_flops"] > 0 and "measured" in cpu_full["peak_source"]
    assert cpu_full["tokens_per_s"] == pytest.approx(0.5 * cpu_full["peak_flops"] / cpu_full["flops_per_token"])
    assert cpu_full["flops_per_token"] == full["flops_per_token"]
    assert cpu_lora["tokens_per_s"] > cpu_full["tokens_per_s"]
    assert rows("--dtype", "fp32")[0]["tokens_per_s"] is None  # no fp32 peak of a GPU to go by
    table = subprocess.run(base, capture_output=True, text=True, timeout=120)
    assert table.returncode == 0 and "hours per 100M tokens" in table.stdout, table.stderr
    assert "989 TFLOP/s x 40%" in " ".join(table.stdout.split())
    for bad, said in [(["--mfu", "0"], "--mfu must be a fraction in (0, 1], got 0"),
                      (["--mfu", "1.5"], "--mfu must be a fraction in (0, 1], got 1.5"),
                      (["--gpu", "Voodoo2"], "--gpu 'Voodoo2': no spec-sheet peak for it; known: H100 PCIe"),
                      (["--cpu", "--gpu", "A100"], "--cpu times this machine's CPU; --gpu does not apply")]:
        proc = subprocess.run([*base, *bad], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and said in " ".join(proc.stderr.split()), (bad, proc.stderr)
    proc = subprocess.run([sys.executable, "-m", "codette", "presets", "--mfu", "0.3"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "--mfu plans a training run: it needs --fit GB" in proc.stderr
