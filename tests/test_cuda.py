"""The GPU path: bf16 autocast training and KV-cache decoding on CUDA. Skipped only where no CUDA GPU exists."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from codette.checkpoint import load_checkpoint
from codette.cli import stages
from codette.model import CodetteModel, ModelConfig, generate_tokens
from codette.train.device import autocast_for, resolve_dtype
from tests._pipeline import QUIET, losses, prepare, tiny_config

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
needs_bf16 = pytest.mark.skipif(not torch.cuda.is_available() or not torch.cuda.is_bf16_supported(),
                                reason="needs a CUDA GPU with bf16")


@needs_bf16
def test_auto_precision_on_cuda_is_bf16_autocast_over_fp32_weights() -> None:
    cuda = torch.device("cuda")
    assert resolve_dtype(cuda, "auto") == "bf16"
    model = CodetteModel(ModelConfig(vocab_size=256, d_model=64, n_layers=2, n_heads=4, max_seq_len=32)).to(cuda)
    with autocast_for(cuda, "auto"):
        logits = model(torch.randint(0, 256, (2, 32), device=cuda))
    assert logits.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in model.parameters())


@needs_bf16
@pytest.mark.slow
def test_bf16_training_on_cuda_learns_and_reloads_on_cpu(tmp_path: Path) -> None:
    out = tmp_path / "run"
    prepare(out)
    # 500 steps of the tiny test model: on the CPU (fp32) 400 steps bring val loss to 0.53 x the untrained loss.
    cfg = tiny_config(out, **{"train.device": "auto", "train.max_steps": 500, "train.eval_every": 250,
                              "train.save_every": 250, "train.probes": 0})
    result = stages.run_train(cfg, QUIET)
    records = [json.loads(line) for f in (out / "logs").glob("metrics_*.jsonl") for line in f.read_text().splitlines()]
    assert [(r["device"], r["precision"]) for r in records if r["kind"] == "start"] == [("cuda", "bf16")]
    initial = losses(out / "logs")[1]  # the untrained model's loss (step 1, before its update): about ln(vocab)
    assert initial > 5.0
    assert result.last_eval["val_loss"] < 0.6 * initial, (result.last_eval["val_loss"], initial)
    state = load_checkpoint(out / "model_final.pt", map_location="cpu")
    assert all(t.device.type == "cpu" and t.dtype == torch.float32 for t in state["model"].values())
    shutil.rmtree(out)


def test_cuda_cache_greedy_matches_no_cache() -> None:
    torch.manual_seed(0)
    model = CodetteModel(ModelConfig(vocab_size=256, d_model=64, n_layers=2, n_heads=4, max_seq_len=128)).cuda()
    cfg = dict(max_new_tokens=40, temperature=0.0)
    a = list(generate_tokens(model, [1, 2, 3], **cfg, use_cache=True))
    b = list(generate_tokens(model, [1, 2, 3], **cfg, use_cache=False))
    assert a == b
