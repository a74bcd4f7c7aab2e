"""Shared fixtures, each built once per session: ~200 synthetic conversations and a small tokenizer
trained on them; the tiny test run's data and tokenizer (``prepared``) and a run folder trained from it
(``run_folder``); the trained test models of ``tests/_export_models.py`` (``trained_models``, ``tiny``).
The fixtures that train are what makes a test slow (``@pytest.mark.slow``; ``make test-fast`` skips them).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch

from codette.data import synthetic
from codette.data.synthetic import Sample
from codette.tokenizer import CodetteTokenizer, render

if TYPE_CHECKING:
    from tests._export_models import Trained


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


@pytest.fixture(scope="session")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Data and tokenizer of the tiny test run (``tests/_pipeline.TINY``), nothing trained: a test copies
    the folder before it trains, so runs never share checkpoints."""
    from tests._pipeline import prepare

    out = tmp_path_factory.mktemp("prepared")
    prepare(out)
    return out


@pytest.fixture(scope="session")
def run_folder(prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder as `codette train` leaves it (2 steps of the tiny test model: model_best.pt, packed/)."""
    from codette.cli import stages
    from tests._pipeline import QUIET, tiny_config

    out = tmp_path_factory.mktemp("run_folder") / "codette_model"
    shutil.copytree(prepared, out)
    stages.run_train(tiny_config(out, **{"train.max_steps": 2, "train.eval_every": 2, "train.save_every": 2,
                                         "train.eval_batches": 1, "train.probes": 0}), QUIET)
    assert (out / "model_best.pt").is_file()
    return out


@pytest.fixture(scope="session")
def model_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The data and tokenizer the trained test models share (``tests/_export_models.py``)."""
    from tests._export_models import shared_data

    return shared_data(tmp_path_factory.mktemp("export_models"))


@pytest.fixture(scope="session")
def trained_models(model_data: Path) -> dict[str, Trained]:
    """The three trained test models by block style: ``codette``, ``llama`` and ``gqa`` (llama with GQA)."""
    from tests._export_models import VARIANTS, train_model

    return {name: train_model(model_data, name, model) for name, model in VARIANTS.items()}


@pytest.fixture(scope="session")
def tiny(trained_models: dict[str, Trained]) -> Trained:
    """The ``llama`` test model: what the backend, agent and serve tests run."""
    return trained_models["llama"]


@pytest.fixture(scope="module")
def one_thread():
    """Tiny matmuls are fastest on one thread; on a busy 2-core machine more threads spin and stall.
    A module asks for it with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
