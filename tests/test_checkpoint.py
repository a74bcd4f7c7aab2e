"""Checkpoints (`codette.checkpoint`): atomic saves, safe loading of Codette's own format only (never a
pickle, never another format version), and the model file a run folder stands for."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from codette.checkpoint import load_checkpoint, model_file, run_folder_model, save_checkpoint
from codette.errors import CodetteError
from tests._pipeline import codette
from tests.test_bad_input import one_line_error, run_cli


# ------------------------------------------------------------------------------------------------
# Saving and loading
# ------------------------------------------------------------------------------------------------
def test_checkpoint_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "model_step_1.pt"
    save_checkpoint({"model": {"w": torch.ones(3)}, "model_config": {}}, target)
    before = target.read_bytes()

    def dies_halfway(obj, fh, *a, **k):
        fh.write(b"PK\x03\x04 partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(OSError):
        save_checkpoint({"model": {"w": torch.zeros(3)}, "model_config": {}}, target)
    with pytest.raises(OSError):
        save_checkpoint({"model": {}, "model_config": {}}, tmp_path / "model_final.pt")
    assert target.read_bytes() == before
    assert not (tmp_path / "model_final.pt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model_step_1.pt"]


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_checkpoint_loading_is_safe_and_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(CodetteError, match="not found: .*nothere.pt"):
        load_checkpoint(tmp_path / "nothere.pt")
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CodetteError, match="empty.pt"):
        load_checkpoint(empty)
    good = save_checkpoint({"model": {"w": torch.ones(1000)}, "model_config": {}}, tmp_path / "good.pt")
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CodetteError, match="trunc.pt.*corrupt or truncated"):
        load_checkpoint(trunc)
    evil = tmp_path / "evil.pt"
    torch.save({"format": "codette-checkpoint-v1", "model": Evil(), "model_config": {}}, evil)
    with pytest.raises(CodetteError, match=r"evil.pt is not a Codette checkpoint: it holds a Python object"):
        load_checkpoint(evil)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CodetteError, match="foreign.pt is not a Codette checkpoint"):
        load_checkpoint(foreign)


# ------------------------------------------------------------------------------------------------
# Checkpoints: only Codette's own zip format, of the version this code reads
# ------------------------------------------------------------------------------------------------
class Payload:
    """A Python object a pickle would construct when loaded."""


def _legacy(path: Path) -> None:
    import torch

    torch.save({"model": {"w": torch.zeros(2)}}, path, _use_new_zipfile_serialization=False)


def _raw_pickle(path: Path) -> None:
    import pickle

    path.write_bytes(pickle.dumps({"format": "codette-checkpoint-v1", "model": {}}))


def _zip_pickle(path: Path) -> None:
    import torch

    torch.save({"format": "codette-checkpoint-v1", "model": {}, "model_config": {}, "x": Payload()}, path)


@pytest.mark.parametrize(("write", "needle"), [
    (_legacy, "it is a Python pickle"),
    (_raw_pickle, "it is a Python pickle"),
    (_zip_pickle, "it holds a Python object (tests.test_checkpoint.Payload)"),
])
def test_pickled_checkpoints_are_refused_by_name_and_never_loaded(tmp_path: Path, capsys, monkeypatch, write,
                                                                  needle: str) -> None:
    path = tmp_path / "model_best.pt"
    write(path)
    code, err = run_cli(capsys, monkeypatch, "generate", str(path), "-p", "hi")
    one_line_error(code, err, f"{path} is not a Codette checkpoint", needle, "never pickled Python objects")
    for torch_advice in ("mmap", "weights_only", "corrupt"):
        assert torch_advice not in err


def test_checkpoint_of_another_format_version_names_both_versions(tmp_path: Path, capsys, monkeypatch) -> None:
    """An old checkpoint with other shapes: the version is named, never torch's shape mismatch."""
    import dataclasses

    import torch

    from codette.checkpoint import FORMAT, FORMAT_VERSION, save_checkpoint
    from codette.model import CodetteModel, ModelConfig

    cfg = ModelConfig(vocab_size=64, d_model=16, n_layers=1, n_heads=2, max_seq_len=16)
    old = CodetteModel(cfg).state_dict()
    old = {k: torch.zeros(*(d + 1 for d in v.shape)) for k, v in old.items()}  # the shapes of another layout
    path = save_checkpoint({"model": old, "model_config": dataclasses.asdict(cfg)}, tmp_path / "model_final.pt")
    assert torch.load(path, weights_only=True)["format"] == FORMAT
    state = torch.load(path, weights_only=True)
    state["format"] = f"codette-checkpoint-v{FORMAT_VERSION - 1}"
    torch.save(state, path)
    code, err = run_cli(capsys, monkeypatch, "generate", str(path), "-p", "hi")
    one_line_error(code, err, f"has format version {FORMAT_VERSION - 1}", f"reads format version {FORMAT_VERSION}")
    assert "size mismatch" not in err and "shape" not in err


# ------------------------------------------------------------------------------------------------
# The model file a run folder stands for (every verb that names a model reads a folder through it)
# ------------------------------------------------------------------------------------------------
def test_run_folder_model_order(tmp_path: Path) -> None:
    assert run_folder_model(tmp_path) is None
    with pytest.raises(CodetteError, match=r"holds no model: no model_best.pt, model_final.pt, model_step_N.pt "
                                           r"or \.gguf$"):
        model_file(tmp_path)
    with pytest.raises(CodetteError, match=r"no model_best.pt, model_final.pt or model_step_N.pt$"):
        model_file(tmp_path, gguf=False)
    (tmp_path / "a.gguf").touch()
    assert model_file(tmp_path) == tmp_path / "a.gguf" and run_folder_model(tmp_path, gguf=False) is None
    (tmp_path / "b.gguf").touch()
    with pytest.raises(CodetteError, match=r"holds 2 GGUF files \(a.gguf, b.gguf\); name one of them"):
        model_file(tmp_path)
    for name in ("model_step_9.pt", "model_step_10.pt"):
        (tmp_path / name).touch()
    assert model_file(tmp_path) == tmp_path / "model_step_10.pt"  # by step number, not by name
    (tmp_path / "model_final.pt").touch()
    assert model_file(tmp_path) == tmp_path / "model_final.pt"
    (tmp_path / "model_best.pt").touch()
    assert model_file(tmp_path) == tmp_path / "model_best.pt"
    assert model_file(tmp_path / "a.gguf") == tmp_path / "a.gguf"  # a file is taken as it is


def test_a_folder_without_a_model_is_a_one_line_error(tmp_path: Path) -> None:
    proc = codette("eval", str(tmp_path))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"{tmp_path} holds no model: no model_best.pt" in proc.stderr.replace("\n", "")
