"""The GPU path: bf16 autocast training and KV-cache decoding on CUDA. Skipped only where no CUDA GPU exists."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from codette.checkpoint import load_checkpoint
from codette.cli import stages
from codette.model import CodetteModel, ModelConfig, SamplingConfig, generate_tokens
from tests._pipeline import QUIET, prepare, tiny_config

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_bf16_training_on_cuda_and_cpu_reload(tmp_path: Path) -> None:
    out = tmp_path / "run"
    prepare(out)
    result = stages.run_train(tiny_config(out, **{"train.device": "auto"}), QUIET)
    assert result.last_eval["val_loss"] < 6.0
    state = load_checkpoint(out / "model_final.pt", map_location="cpu")
    assert all(t.device.type == "cpu" and t.dtype == torch.float32 for t in state["model"].values())
    shutil.rmtree(out)


def test_cuda_cache_greedy_matches_no_cache() -> None:
    torch.manual_seed(0)
    model = CodetteModel(ModelConfig(vocab_size=256, d_model=64, n_layers=2, n_heads=4, max_seq_len=128)).cuda()
    cfg = SamplingConfig(max_new_tokens=40, temperature=0.0)
    a = list(generate_tokens(model, [1, 2, 3], cfg, use_cache=True))
    b = list(generate_tokens(model, [1, 2, 3], cfg, use_cache=False))
    assert a == b
