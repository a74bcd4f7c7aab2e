"""Shared fixtures: ~200 synthetic conversations and one small tokenizer trained on them, once per session."""

from __future__ import annotations

import pytest
import torch

from codette.data import synthetic
from codette.data.synthetic import Sample
from codette.tokenizer import CodetteTokenizer, render


def pytest_report_header() -> str:
    """Which precision training's ``auto`` picks in this run: bf16 or fp32 depends on the CPU unless
    CODETTE_DTYPE forces it, and a failure report should say which one the suite ran with."""
    from codette.train.device import DTYPE_ENV, forced_dtype, resolve_dtype

    how = f"forced by {DTYPE_ENV}" if forced_dtype() else "picked by this CPU"
    return f"codette training precision (train.dtype=auto): {resolve_dtype(torch.device('cpu'))}, {how}"


@pytest.fixture(scope="session")
def samples() -> list[Sample]:
    """200 synthetic conversations (seed 0), train and val together."""
    train, val, _ = synthetic.generate(200, seed=0)
    return train + val


@pytest.fixture(scope="session")
def tokenizer(samples: list[Sample]) -> CodetteTokenizer:
    """A byte-level BPE with a 600-token vocabulary, trained on the rendered conversations."""
    return CodetteTokenizer.train([render(s.messages, s.tools) for s in samples], vocab_size=600)
