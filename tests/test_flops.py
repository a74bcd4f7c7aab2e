"""Model FLOPs per token (codette.model.flops) against torch's own FLOP counter, and the MFU arithmetic."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from codette.model import CodetteModel, ModelConfig
from codette.model.flops import (
    flops_per_token,
    gpu_bf16_peak,
    lora_flops_per_token,
    matmul_parameters,
    matmul_peak,
    mfu,
    model_flops_per_token,
)
from codette.model.memory import lora_parameters


@pytest.mark.parametrize("style,kv,tied", [("codette", None, True), ("llama", 2, True), ("codette", None, False)])
def test_formula_equals_torchs_count_of_a_training_step(style: str, kv: int | None, tied: bool) -> None:
    cfg = ModelConfig(vocab_size=256, d_model=64, n_layers=2, n_heads=4, n_kv_heads=kv, max_seq_len=32,
                      block_style=style, tie_embeddings=tied)
    model = CodetteModel(cfg)
    x = torch.randint(0, 256, (3, 32))
    with FlopCounterMode(display=False) as counter:
        model(x, x).loss_sum.backward()
    # torch counts the matmuls forward and backward: exactly the 6N part (its counter has no rule for the CPU
    # attention kernel, so the attention term is checked by hand below)
    assert counter.get_total_flops() == 3 * 32 * 6 * matmul_parameters(cfg)
    assert model_flops_per_token(cfg, 32) - 6 * matmul_parameters(cfg) == 3 * 2 * (2 * 2 * 32 * 64)


def test_matmul_parameters_leave_out_the_lookup_and_the_norms() -> None:
    tied = ModelConfig(vocab_size=256, d_model=64, n_layers=2, n_heads=4, max_seq_len=32)
    untied = ModelConfig(vocab_size=256, d_model=64, n_layers=2, n_heads=4, max_seq_len=32, tie_embeddings=False)
    model = CodetteModel(tied)
    assert matmul_parameters(tied) == sum(p.numel() for p in model.parameters() if p.dim() == 2)
    assert matmul_parameters(untied) == matmul_parameters(tied)  # the output projection, counted once either way
    assert flops_per_token(10, 2, 8, 16) == 6 * 10 + 12 * 2 * 16 * 8


def test_gpu_peaks_match_the_most_specific_name() -> None:
    assert gpu_bf16_peak("NVIDIA H100 PCIe") == 756e12
    assert gpu_bf16_peak("NVIDIA H100 80GB HBM3") == 989e12
    assert gpu_bf16_peak("NVIDIA H200") == 989e12
    assert gpu_bf16_peak("NVIDIA A100-SXM4-80GB") == 312e12
    assert gpu_bf16_peak("NVIDIA L40S") == 362e12 and gpu_bf16_peak("NVIDIA L4") == 121e12
    assert gpu_bf16_peak("Some CPU") is None


def test_mfu_is_achieved_over_peak() -> None:
    cfg = ModelConfig(vocab_size=256, d_model=64, n_layers=2, n_heads=4, max_seq_len=32)
    per_token = model_flops_per_token(cfg, 32)
    assert mfu(1000.0, cfg, 32, per_token * 4000.0) == pytest.approx(0.25)
    assert mfu(1000.0, cfg, 32, per_token * 1000.0, devices=2) == pytest.approx(0.5)
    lora = model_flops_per_token(cfg, 32, n_lora=512)  # a LoRA run counts its own FLOPs, fewer than a full one
    assert lora < per_token and mfu(1000.0, cfg, 32, per_token * 4000.0, n_lora=512) == pytest.approx(0.25 * lora / per_token)


def test_lora_flops_by_hand() -> None:
    """4 FLOPs per frozen matrix weight, 6 per adapter weight, attention as in a full run."""
    cfg = ModelConfig(vocab_size=256, d_model=64, n_layers=2, n_heads=4, max_seq_len=32)  # codette blocks, MLP 256
    n_mm = 2 * (4 * 64 * 64 + 2 * 64 * 256) + 256 * 64  # blocks' q, k, v, o, up, down; the tied head
    n_lora = 2 * 4 * (4 * (64 + 64) + 2 * (64 + 256))  # L x rank x (in + out) over the six projections
    attention = 12 * 2 * 32 * 64
    assert (matmul_parameters(cfg), lora_parameters(cfg, 4)) == (n_mm, n_lora) == (114_688, 9_216)
    lora = model_flops_per_token(cfg, 32, n_lora=n_lora)
    assert lora == lora_flops_per_token(n_mm, n_lora, 2, 64, 32) == 4 * n_mm + 6 * n_lora + attention == 563_200
    full = model_flops_per_token(cfg, 32)
    assert full == 6 * n_mm + attention == 737_280
    assert lora < full
    assert model_flops_per_token(cfg, 32, n_lora=0) == full
    with pytest.raises(ValueError, match="n_lora"):
        model_flops_per_token(cfg, 32, n_lora=-1)


@pytest.mark.parametrize("style,kv", [("codette", None), ("llama", 2)])
def test_lora_formula_against_torchs_count_of_a_peft_step(style: str, kv: int | None) -> None:
    """torch's count of a LoRA training step (peft's adapters on every projection): 4N + 6N_lora per token, less
    what the first block skips (its q/k/v input gradients and their adapters' A: the input needs no gradient)."""
    pytest.importorskip("peft")
    from codette.config import TrainConfig
    from codette.train.lora import inject

    cfg = ModelConfig(vocab_size=256, d_model=64, n_layers=2, n_heads=4, n_kv_heads=kv, max_seq_len=32,
                      block_style=style)
    rank, d, d_kv = 4, 64, (kv or 4) * 16
    model = CodetteModel(cfg)
    inject(model, TrainConfig(lora_rank=rank, init_from="base"), None)
    n_lora = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert n_lora == lora_parameters(cfg, rank)
    x = torch.randint(0, 256, (3, 32))
    with FlopCounterMode(display=False) as counter:
        model(x, x).loss_sum.backward()
    attention = 12 * 2 * 32 * (4 * 16)  # not counted by torch on the CPU (see above)
    first_block_skip = 2 * d * (d + 2 * d_kv) + 3 * 2 * d * rank
    per_token = model_flops_per_token(cfg, 32, n_lora=n_lora) - attention
    assert counter.get_total_flops() == 3 * 32 * (per_token - first_block_skip)
    assert counter.get_total_flops() < 3 * 32 * (model_flops_per_token(cfg, 32) - attention)


def test_matmul_peak_is_flops_over_the_fastest_timed_matmul(monkeypatch) -> None:
    """2·n³ FLOPs over the fastest of ``reps`` timings, the warm-up's left out (a clock only the matmuls move)."""
    import time

    took = iter([0.5, 4.0, 2.0, 8.0])  # warm-up (fastest, but not counted), then three timed matmuls
    now = [1000.0]

    def mm(a: torch.Tensor, b: torch.Tensor) -> None:
        now[0] += next(took)

    monkeypatch.setattr(time, "perf_counter", lambda: now[0])
    monkeypatch.setattr(torch, "mm", mm)
    assert matmul_peak("cpu", "fp32", n=64, reps=3) == 2 * 64**3 / 2.0
    monkeypatch.undo()
    assert matmul_peak("cpu", torch.float32, n=64, reps=1) > 0  # a real one: some FLOP/s
    with pytest.raises(ValueError, match="fp32 or bf16"):
        matmul_peak("cpu", "fp16")
