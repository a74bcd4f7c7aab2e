"""Distributed training under torchrun, on the CPU with Gloo and 2 processes: DDP and FSDP2 follow the
one-process loss curve at the same global batch, a sharded run resumes after kill -9, its consolidated
checkpoint opens for export, and a NaN on one rank stops both."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from codette.checkpoint import latest_valid_checkpoint, load_checkpoint
from codette.checkpoint.sharded import consolidate, load_state
from codette.cli import stages
from codette.data.build import ensure_packed
from codette.errors import CodetteError
from codette.tokenizer import CodetteTokenizer
from tests._pipeline import QUIET, TINY, losses, tiny_config, write_config

pytestmark = pytest.mark.slow

STEPS = 16
# One process reads 4 sequences per micro-batch; two read 2 each: the same 8 sequences per step.
# fp32 on every CPU: the curves are compared at rel 1e-5, which bf16 autocast cannot meet.
ONE = {"max_steps": STEPS, "batch_size": 4, "grad_accum": 2, "save_every": 4, "eval_every": 12, "log_every": 4,
       "probes": 0, "dtype": "fp32"}
TWO = {**ONE, "batch_size": 2}


@pytest.fixture(scope="module")
def packed(prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's prepared folder, copied and packed once here (not by both ranks at once)."""
    out = tmp_path_factory.mktemp("packed") / "prepared"
    shutil.copytree(prepared, out)
    ensure_packed(out, CodetteTokenizer.load(out))
    return out


def _fresh(prepared: Path, root: Path, name: str) -> Path:
    dst = root / name
    shutil.copytree(prepared, dst, ignore=shutil.ignore_patterns("model_*", "logs"))
    return dst


def _config(out: Path, **train: object) -> Path:
    data = {**TINY, "out_dir": str(out), "log_dir": str(out / "logs"), "train": {**TINY["train"], **train}}
    return write_config(out.parent / f"{out.name}.json", data)


def _torchrun(*args: str, popen: bool = False, script: Path | None = None):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += [str(script)] if script else ["-m", "codette"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if popen:
        return subprocess.Popen([*cmd, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
    return subprocess.run([*cmd, *args], env=env, capture_output=True, text=True, timeout=180)


def _records(log_dir: Path) -> list[dict]:
    return [json.loads(line) for f in sorted(log_dir.glob("metrics_*.jsonl")) for line in f.read_text().splitlines()]


@pytest.fixture(scope="module")
def one_rank(packed: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = _fresh(packed, tmp_path_factory.mktemp("one"), "run")
    stages.run_train(tiny_config(out, **{f"train.{k}": v for k, v in ONE.items()}), QUIET)
    return out


@pytest.fixture(scope="module")
def sharded(packed: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = _fresh(packed, tmp_path_factory.mktemp("fsdp"), "run")
    proc = _torchrun("train", "-c", str(_config(out, **TWO, parallel="fsdp")))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def _same_curve(one: Path, two: Path) -> None:
    a, b = losses(one / "logs"), losses(two / "logs")
    assert sorted(a) == sorted(b) == list(range(1, STEPS + 1))
    assert all(b[s] == pytest.approx(a[s], rel=1e-5) for s in a), [(s, a[s], b[s]) for s in a if a[s] != b[s]][:3]
    assert a[STEPS] < a[1] - 0.2  # it learned, so equal curves say something
    wa = load_checkpoint(one / "model_final.pt")["model"]
    wb = load_checkpoint(two / "model_final.pt")["model"]
    assert wa.keys() == wb.keys()
    assert all(torch.allclose(wa[k], wb[k], atol=1e-4, rtol=0) for k in wa)


def test_ddp_on_two_ranks_follows_the_one_rank_curve(packed: Path, one_rank: Path, tmp_path: Path) -> None:
    out = _fresh(packed, tmp_path, "ddp")
    proc = _torchrun("train", "-c", str(_config(out, **TWO)))  # auto: DDP for a small model
    assert proc.returncode == 0, proc.stderr[-3000:]
    _same_curve(one_rank, out)
    start = [r for r in _records(out / "logs") if r["kind"] == "start"]
    assert [(r["world_size"], r["parallel"]) for r in start] == [(2, "ddp")]  # one log: rank 0's
    assert len(list((out / "logs").glob("metrics_*.jsonl"))) == 1
    assert load_checkpoint(out / "model_step_12.pt")["data_position"] == 12 * 8  # global sequences


def test_fsdp2_on_two_ranks_follows_the_one_rank_curve_and_exports(one_rank: Path, sharded: Path) -> None:
    from codette.export.source import open_checkpoint

    _same_curve(one_rank, sharded)
    assert [r["parallel"] for r in _records(sharded / "logs") if r["kind"] == "start"] == ["fsdp"]
    assert sorted(p.name for p in sharded.glob("model_*")) == [
        "model_best.pt", "model_final.dcp", "model_final.pt", "model_step_12.dcp", "model_step_4.dcp",
        "model_step_8.dcp"]
    final = load_checkpoint(sharded / "model_final.pt")
    assert "optimizer" not in final and final["step"] == STEPS
    src = open_checkpoint(sharded / "model_final.pt")  # the export stage's reader
    assert src.step == STEPS and src.cfg.d_model == TINY["model"]["d_model"]
    # A periodic sharded checkpoint consolidates offline, in this one process, to the same kind of file.
    out = consolidate(sharded / "model_step_12.dcp", sharded / "model_step_12.pt")
    state = load_checkpoint(out)
    assert state["step"] == 12 and state["data_position"] == 12 * 8
    assert state["model"].keys() == final["model"].keys()
    assert state["model"]["lm_head.weight"].data_ptr() == state["model"]["embed.weight"].data_ptr()
    assert not torch.equal(state["model"]["embed.weight"], final["model"]["embed.weight"])
    os.unlink(out)


def test_sharded_checkpoint_errors_name_the_folder(packed: Path, sharded: Path, tmp_path: Path) -> None:
    out = _fresh(packed, tmp_path, "single")
    with pytest.raises(CodetteError, match=r"model_step_12\.dcp: it is a sharded \(FSDP\) checkpoint"):
        stages.run_train(tiny_config(out), QUIET, resume=str(sharded / "model_step_12.dcp"))
    broken = tmp_path / "model_step_4.dcp"
    shutil.copytree(sharded / "model_step_4.dcp", broken)
    os.unlink(broken / ".metadata")  # as a write killed before DCP finished would leave it
    with pytest.raises(CodetteError, match=r"model_step_4\.dcp is incomplete"):
        load_state(broken)
    assert latest_valid_checkpoint(tmp_path) is None


def test_sharded_run_resumes_after_kill_9(packed: Path, sharded: Path, tmp_path: Path) -> None:
    killed = _fresh(packed, tmp_path, "killed")
    cfg = _config(killed, **TWO, parallel="fsdp")
    proc = _torchrun("train", "-c", str(cfg), popen=True)
    deadline = time.time() + 120
    while not (killed / "model_step_4.dcp").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both ranks at once
    proc.wait()
    assert not (killed / "model_final.pt").exists(), "the run finished before it could be killed"
    resumed_from = latest_valid_checkpoint(killed)
    assert resumed_from is not None and resumed_from.suffix == ".dcp"
    start = load_state(resumed_from)["step"]
    done = _torchrun("train", "-c", str(cfg), "--resume", "auto")
    assert done.returncode == 0, done.stderr[-3000:]
    a, b = losses(sharded / "logs"), losses(killed / "logs")
    for s in range(start + 1, STEPS + 1):
        assert a[s] == b[s], f"step {s}: {a[s]} != {b[s]} (resumed from step {start})"
    fa, fb = (load_checkpoint(d / "model_final.pt")["model"] for d in (sharded, killed))
    assert all(torch.equal(fa[k], fb[k]) for k in fa)
    assert not list(killed.glob(".*.tmp"))  # the killed run's half-written folder, if any, was removed


POISON = """
import os, sys, torch
real, calls = torch.nn.functional.cross_entropy, [0]
def poisoned(*args, **kwargs):
    calls[0] += 1
    loss = real(*args, **kwargs)
    return loss * float("nan") if os.environ["RANK"] == "1" and calls[0] == 7 else loss
torch.nn.functional.cross_entropy = poisoned
sys.argv[0] = "codette"
from codette.cli.main import main
main()
"""


def test_nan_on_one_rank_stops_every_rank(packed: Path, tmp_path: Path) -> None:
    """Rank 1's 7th micro-batch (step 4) turns NaN; both ranks stop at the step-5 log point, before its
    checkpoint, naming step 4 and the last good checkpoint."""
    out = _fresh(packed, tmp_path, "nan")
    script = tmp_path / "poisoned_codette.py"
    script.write_text(POISON)
    proc = _torchrun("train", "-c", str(_config(out, **{**TWO, "save_every": 5, "log_every": 5, "max_steps": 40,
                                                        "eval_every": 100})), script=script)
    assert proc.returncode != 0
    assert "training loss became nan at step 4" in proc.stderr, proc.stderr[-3000:]
    assert "none (no checkpoint was saved yet)" in proc.stderr
    assert not list(out.glob("model_*"))
    diverged = [r for r in _records(out / "logs") if r["kind"] == "diverged"]
    assert [r["step"] for r in diverged] == [4]


def test_init_from_under_fsdp2_and_from_a_sharded_folder(packed: Path, one_rank: Path, sharded: Path,
                                                         tmp_path: Path) -> None:
    """--init-from in a sharded run: rank 0 reads the weights and scatters them, so the first steps follow
    one process's from the same weights; and one process starts from a sharded folder's weights."""
    from codette.checkpoint.sharded import read_weights
    from codette.fileio import file_sha256
    from codette.tokenizer.bpe import TOKENIZER_FILE
    from codette.train.trainer import Trainer

    start = one_rank / "model_final.pt"
    few = {"max_steps": 2, "eval_every": 2}
    alone = _fresh(packed, tmp_path, "alone")
    train = {**ONE, **few, "init_from": str(start)}
    stages.run_train(tiny_config(alone, **{f"train.{k}": v for k, v in train.items()}), QUIET)
    out = _fresh(packed, tmp_path, "fsdp_init")
    proc = _torchrun("train", "-c", str(_config(out, **{**TWO, **few}, parallel="fsdp")), "--init-from", str(start))
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = losses(alone / "logs"), losses(out / "logs")
    assert sorted(a) == sorted(b) == [1, 2]
    assert all(b[s] == pytest.approx(a[s], rel=1e-5) for s in a), (a, b)
    assert a[1] < losses(one_rank / "logs")[1] - 0.2  # it did start from the trained weights
    cfg = tiny_config(out, **{"train.init_from": str(sharded / "model_step_12.dcp")})
    tok = CodetteTokenizer.load(out)
    trainer = Trainer(cfg.train, stages._model_config(cfg, len(tok)), ensure_packed(out, tok), out,
                      init_from=cfg.train.init_from, tokenizer_sha256=file_sha256(out / TOKENIZER_FILE))
    _, want = read_weights(sharded / "model_step_12.dcp")
    got = trainer.model.state_dict()
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got)
