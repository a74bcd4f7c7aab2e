"""`codette eval --device` and `codette generate --device`: the device reaches the model, a bad one is one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from codette.backends.local import LocalBackend
from codette.cli.main import app
from codette.errors import CodetteError

from tests._pipeline import codette


class _Loaded(Exception):
    """Raised by the stand-in loader once it has seen the device (nothing needs loading for this test)."""


@pytest.fixture
def seen_device(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []

    def from_checkpoint(cls, checkpoint, tokenizer_dir=None, device="cpu"):  # noqa: ANN001, ANN202
        seen.append(device)
        raise _Loaded

    monkeypatch.setattr(LocalBackend, "from_checkpoint", classmethod(from_checkpoint))
    return seen


@pytest.mark.parametrize("verb", [["eval", "model_final.pt"], ["generate", "model_final.pt", "-p", "hi"]])
def test_the_device_reaches_the_checkpoint_loader(verb: list[str], seen_device: list[str], tmp_path: Path) -> None:
    for args in ([], ["--device", "cpu"]):
        result = CliRunner().invoke(app, [*verb, *args])
        assert isinstance(result.exception, _Loaded), result.output
    assert seen_device == ["cpu", "cpu"]


# ask, chat and serve check the flag before the model (here a missing one) is looked for or loaded
CHECKED = [["eval", "x.pt"], ["generate", "x.pt", "-p", "hi"], ["ask", "hi", "x.pt"], ["chat", "x.pt"],
           ["serve", "x.pt"]]


@pytest.mark.parametrize("verb", CHECKED, ids=lambda v: v[0])
def test_a_bad_device_is_one_line_naming_the_flag(verb: list[str]) -> None:
    proc = codette(*verb, "--device", "tpu", timeout=120)
    assert proc.returncode == 2 and "--device must be cpu, cuda or mps, got 'tpu'" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message where CUDA is missing")
@pytest.mark.parametrize("verb", CHECKED[1:], ids=lambda v: v[0])
def test_cuda_where_there_is_none_says_so(verb: list[str]) -> None:
    proc = codette(*verb, "--device", "cuda", timeout=120)
    assert proc.returncode == 2 and "no CUDA device is available here" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_the_check_is_a_codette_error() -> None:
    from codette.cli.main import _check_device

    with pytest.raises(CodetteError, match="--device"):
        _check_device("gpu")
    _check_device("cpu")
