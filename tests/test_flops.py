"""Model FLOPs per token (codette.model.flops) against torch's own FLOP counter, and the MFU arithmetic."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from codette.model import CodetteModel, ModelConfig
from codette.model.flops import flops_per_token, gpu_bf16_peak, matmul_parameters, mfu, model_flops_per_token


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
