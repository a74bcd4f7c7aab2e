"""Shared fixtures: ~200 synthetic conversations and one small tokenizer trained on them, once per session."""

from __future__ import annotations

import pytest

from codette.data import synthetic
from codette.data.synthetic import Sample
from codette.tokenizer import CodetteTokenizer, render


@pytest.fixture(scope="session")
def samples() -> list[Sample]:
    """200 synthetic conversations (seed 0), train and val together."""
    train, val, _ = synthetic.generate(200, seed=0)
    return train + val


@pytest.fixture(scope="session")
def tokenizer(samples: list[Sample]) -> CodetteTokenizer:
    """A byte-level BPE with a 600-token vocabulary, trained on the rendered conversations."""
    return CodetteTokenizer.train([render(s.messages, s.tools) for s in samples], vocab_size=600)
