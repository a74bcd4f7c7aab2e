"""Training: it learns, checkpoints are atomic and safe, resume is exact (also after kill -9), the best checkpoint
is selected by its metric, --init-from starts a new run from another run's weights, bad input is clear."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import codette.train.device as device_mod
from codette.checkpoint import latest_valid_checkpoint, load_checkpoint, save_checkpoint
from codette.cli import stages
from codette.config import RunConfig
from codette.data.build import ensure_packed
from codette.errors import CodetteError
from codette.fileio import file_sha256
from codette.tokenizer import CodetteTokenizer
from codette.tokenizer.bpe import TOKENIZER_FILE
from codette.train.schedule import lr_at
from codette.train.selection import BestTracker, direction
from codette.train.trainer import Trainer
from tests._pipeline import QUIET, TINY, codette, fresh_run, losses, tiny_config, write_config


WORDS = ("the river carries light over stone while old bridges remember every traveller who crossed "
         "in winter and summer a quiet city keeps its lamps burning through the long night").split()


@pytest.fixture(scope="module")
def prepared_text(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Like the session's ``prepared`` (tests/conftest.py), from a plain-text corpus only (no chat): a folder of
    .txt files."""
    import random

    rng = random.Random(0)
    corpus = tmp_path_factory.mktemp("corpus")
    for i in range(40):
        paragraphs = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(40, 120))) + "." for _ in range(3)]
        (corpus / f"part{i:02d}.txt").write_text("\n\n".join(paragraphs) + "\n", encoding="utf-8")
    out = tmp_path_factory.mktemp("prepared_text")
    cfg = tiny_config(out, **{"data.synthetic": False, "data.sources": [str(corpus)]})
    stages.run_data(cfg, QUIET)
    stages.run_tokenizer(cfg, QUIET)
    return out


def _config_file(tmp_path: Path, out: Path, **train: object) -> Path:
    data = {**TINY, "out_dir": str(out), "log_dir": str(out / "logs")}
    data["train"] = {**TINY["train"], **train}
    return write_config(tmp_path / f"{out.name}.json", data)


@pytest.mark.slow
def test_training_learns_and_writes_checkpoints(prepared: Path, tmp_path: Path) -> None:
    out = fresh_run(prepared, tmp_path)
    result = stages.run_train(tiny_config(out), QUIET)
    hist = losses(out / "logs")
    assert sorted(hist) == list(range(1, 41))
    assert sum(list(hist.values())[-5:]) / 5 < 0.85 * sum(list(hist.values())[:5]) / 5
    for name in ("model_best.pt", "model_final.pt", "model_step_10.pt", "model_step_30.pt"):
        assert (out / name).is_file(), name
    state = load_checkpoint(out / "model_final.pt")
    for key in ("model", "optimizer", "scheduler", "step", "rng", "data_position", "model_config", "run_config"):
        assert key in state, key
    assert state["step"] == 40 and state["data_position"] == 40 * 4
    assert result.last_eval["val_loss"] < 6.0 and 0.0 < result.last_eval["token_accuracy"] <= 1.0
    assert list((out / "logs").glob("training_*.log"))
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))


def _windows(log_dir: Path) -> list[str]:
    records = [json.loads(line) for f in log_dir.glob("metrics_*.jsonl") for line in f.read_text().splitlines()]
    return [r["windows"] for r in records if r["kind"] == "start"]


@pytest.mark.parametrize(("corpus", "packing"), [("chat", "stream"), ("text", "stream"), ("chat", "bestfit")])
@pytest.mark.slow
def test_resume_is_exact_in_process(corpus: str, packing: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """Stream packing reads chat in document-aligned windows, plain text in random-offset ones; best-fit packs
    whole documents. Each resumes bit-identically."""
    prepared = request.getfixturevalue("prepared" if corpus == "chat" else "prepared_text")
    full = fresh_run(prepared, tmp_path, "full")
    stages.run_train(tiny_config(full, **{"train.packing": packing}), QUIET)
    part = fresh_run(prepared, tmp_path, "part")
    shutil.copy(full / "model_step_20.pt", part / "model_step_20.pt")
    stages.run_train(tiny_config(part, **{"train.packing": packing}), QUIET, resume=str(part / "model_step_20.pt"))
    want = "best-fit" if packing == "bestfit" else "document-aligned" if corpus == "chat" else "random offsets"
    assert _windows(full / "logs") == [want] and _windows(part / "logs") == [want]
    (log,) = (full / "logs").glob("metrics_*.jsonl")
    start = json.loads(log.read_text().splitlines()[0])
    assert start["kind"] == "start" and start["packing"] == packing
    assert start["processed_to_distinct"] == pytest.approx(40 * 4 * 64 / start["train_tokens"])
    assert (start["padding_fraction"] > 0) == (packing == "bestfit")
    a, b = losses(full / "logs"), losses(part / "logs")
    assert sorted(b) == list(range(21, 41))
    assert all(a[s] == b[s] for s in b), [(s, a[s], b[s]) for s in b if a[s] != b[s]][:3]
    fa = load_checkpoint(full / "model_final.pt")["model"]
    fb = load_checkpoint(part / "model_final.pt")["model"]
    assert all(torch.equal(fa[k], fb[k]) for k in fa)


@pytest.mark.slow
def test_resume_after_kill_9_matches_uninterrupted_run(prepared: Path, tmp_path: Path) -> None:
    steps = 400
    full = fresh_run(prepared, tmp_path, "full")
    codette("train", "-c", str(_config_file(tmp_path, full, max_steps=steps, eval_every=1000)), check=True)
    killed = fresh_run(prepared, tmp_path, "killed")
    cfg = _config_file(tmp_path, killed, max_steps=steps, eval_every=1000)
    proc = subprocess.Popen([sys.executable, "-m", "codette", "train", "-c", str(cfg)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (killed / "model_step_50.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "model_final.pt").exists(), "the run finished before it could be killed"
    resumed_from = latest_valid_checkpoint(killed)
    assert resumed_from is not None
    start = load_checkpoint(resumed_from)["step"]
    codette("train", "-c", str(cfg), "--resume", "auto", check=True)
    a, b = losses(full / "logs"), losses(killed / "logs")
    for s in range(start + 1, steps + 1):
        assert a[s] == b[s], f"step {s}: {a[s]} != {b[s]} (resumed from step {start})"


@pytest.mark.slow
def test_gradient_accumulation_averages_over_tokens_not_micro_batches(prepared: Path, tmp_path: Path) -> None:
    """2 micro-batches of 4 take the same steps as one batch of 8 (the same windows), although the two
    halves hold different numbers of assistant tokens: a mean of the two means would not."""
    from codette.data.loader import IGNORE_INDEX, BatchSampler
    from codette.data.pack import PackedSplit

    runs = {}
    for name, batch, accum in (("whole", 8, 1), ("accum", 4, 2)):
        out = fresh_run(prepared, tmp_path, name)
        # fp32: the check is exact equality of two summation orders, which bf16's 8 mantissa bits break
        stages.run_train(tiny_config(out, **{"train.max_steps": 3, "train.batch_size": batch, "train.dtype": "fp32",
                                             "train.grad_accum": accum, "train.eval_every": 100}), QUIET)
        runs[name] = out
    sampler = BatchSampler(PackedSplit(runs["whole"] / "packed", "train"), TINY["model"]["max_seq_len"],
                           TINY["train"]["seed"], aligned=True)
    counts = [int((sampler.batch(p, 4)[1] != IGNORE_INDEX).sum()) for p in (0, 4)]
    assert counts[0] != counts[1]  # otherwise both normalisations agree and this test proves nothing
    a, b = losses(runs["whole"] / "logs"), losses(runs["accum"] / "logs")
    assert sorted(a) == sorted(b) == [1, 2, 3]
    assert all(b[s] == pytest.approx(a[s], rel=1e-5) for s in a), (a, b)
    wa = load_checkpoint(runs["whole"] / "model_final.pt")["model"]
    wb = load_checkpoint(runs["accum"] / "model_final.pt")["model"]
    assert all(torch.allclose(wa[k], wb[k], atol=1e-5, rtol=0) for k in wa)


def test_accumulated_gradient_equals_the_gradient_of_one_batch() -> None:
    """The trainer's backward pass over 2 micro-batches with different numbers of targets gives the
    gradient of one batch holding both: the token mean of the step, not a mean of micro-batch means."""
    from codette.data.loader import IGNORE_INDEX
    from codette.model import CodetteModel, ModelConfig
    from codette.train.step import accumulate_gradients

    torch.manual_seed(0)
    model = CodetteModel(ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=4, max_seq_len=16))
    x = torch.randint(0, 64, (4, 16))
    y = torch.randint(0, 64, (4, 16))
    y[:2, :13] = IGNORE_INDEX  # the first micro-batch keeps 6 targets, the second 64
    n = int((y != IGNORE_INDEX).sum())

    def grads(batches: list) -> dict[str, torch.Tensor]:
        model.zero_grad(set_to_none=True)
        shares = accumulate_gradients(model, batches, n, torch.device("cpu"))
        assert float(shares.sum()) == pytest.approx(float(model(x, y).loss_sum.detach()) / n, rel=1e-5)
        return {k: p.grad.clone() for k, p in model.named_parameters()}

    whole, accum = grads([(x, y)]), grads([(x[:2], y[:2]), (x[2:], y[2:])])
    assert all(torch.allclose(whole[k], accum[k], atol=1e-6, rtol=1e-4) for k in whole)
    model.zero_grad(set_to_none=True)  # what a mean of the two micro-batch means would have given instead
    for xb, yb in ((x[:2], y[:2]), (x[2:], y[2:])):
        out = model(xb, yb)
        (out.loss_sum / out.n_targets / 2).backward()
    assert not torch.allclose(whole["embed.weight"], model.embed.weight.grad, atol=1e-6, rtol=1e-4)


def test_plain_text_windows_start_at_seeded_random_offsets(prepared_text: Path, prepared: Path) -> None:
    from codette.data.build import ensure_packed
    from codette.data.loader import IGNORE_INDEX, BatchSampler
    from codette.data.pack import PackedSplit
    from codette.tokenizer import CodetteTokenizer

    seq = TINY["model"]["max_seq_len"]
    split, chat = (PackedSplit(ensure_packed(out, CodetteTokenizer.load(out)), "train")
                   for out in (prepared_text, prepared))
    assert split.plain_text and not chat.plain_text
    a, b = (BatchSampler(split, seq, seed=7, random_offsets=True) for _ in range(2))
    n = a.n_blocks
    starts = [a._position_start(p) for p in range(3 * n)]
    assert all(0 <= s <= len(split) - seq - 1 for s in starts)
    assert sum(s % seq == 0 for s in starts) < len(starts) / 4  # not the block grid
    assert len(set(starts[:n]) & set(starts[n:2 * n])) < n / 4  # each epoch draws new offsets
    tokens = np.asarray(split.tokens, dtype=np.int64)
    positions = [2 * n + 3, 5, n - 2, 0]  # other order, other epochs, a batch across an epoch boundary
    for p in positions:
        x, y = a.batch(p, 4)
        assert torch.equal(x, b.batch(p, 4)[0])  # a pure function of (seed, position)
        assert x[0].tolist() == tokens[starts[p]:starts[p] + seq].tolist()
        assert a.count_targets(p, 4) == int((y != IGNORE_INDEX).sum())
    other = BatchSampler(split, seq, seed=8, random_offsets=True)
    assert not torch.equal(other.batch(0, 4)[0], a.batch(0, 4)[0])


@pytest.mark.parametrize("world", [1, 2, 3])
def test_ranks_share_each_step_without_repeating_or_skipping_a_sequence(world: int) -> None:
    from codette.train.step import micro_batch_positions

    batch, accum, position = 2, 3, 40
    read = [p + j for rank in range(world) for p in micro_batch_positions(position, batch, accum, world, rank)
            for j in range(batch)]
    assert sorted(read) == list(range(position, position + batch * accum * world))  # next step starts after


def test_accumulation_under_ddp_reduces_gradients_once_per_step(tmp_path: Path) -> None:
    """DDP's no_sync keeps the micro-batches before the last one local: one all-reduce per bucket per step."""
    import torch.distributed as dist

    from codette.model import CodetteModel, ModelConfig
    from codette.train.distributed import ddp_wrap, no_sync_for
    from codette.train.step import accumulate_gradients

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        model = ddp_wrap(CodetteModel(ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=4,
                                                  max_seq_len=16)), torch.device("cpu"))
        calls = []

        def counting(state, bucket):
            calls.append(bucket.index())
            fut = torch.futures.Future()
            fut.set_result(bucket.buffer())
            return fut

        model.register_comm_hook(None, counting)
        batches = [(torch.randint(0, 64, (2, 16)), torch.randint(0, 64, (2, 16))) for _ in range(3)]
        accumulate_gradients(model, batches, 96, torch.device("cpu"), no_sync=no_sync_for("ddp", model))
        per_step = len(calls)
        assert per_step >= 1
        accumulate_gradients(model, batches, 96, torch.device("cpu"))  # without no_sync: every micro-batch
        assert len(calls) - per_step == 3 * per_step
    finally:
        dist.destroy_process_group()


def test_parallel_strategy_follows_the_config_and_the_model_size(monkeypatch: pytest.MonkeyPatch) -> None:
    from codette.train.distributed import FSDP_AUTO_PARAMS, World, choose_strategy, world_from_env

    two = World(2, 0, 0)
    assert choose_strategy("auto", FSDP_AUTO_PARAMS, two) == "fsdp"
    assert choose_strategy("auto", FSDP_AUTO_PARAMS - 1, two) == "ddp"
    assert choose_strategy("fsdp", 10, two) == "fsdp" and choose_strategy("ddp", 10**10, two) == "ddp"
    assert choose_strategy("fsdp", 10, World()) == "none"  # one process: no wrapper at all
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert world_from_env() == World(2, 1, 1) and not world_from_env().main
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(CodetteError, match="RANK=2 does not fit WORLD_SIZE=2"):
        world_from_env()
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(CodetteError, match="WORLD_SIZE='two': expected an integer"):
        world_from_env()
    with pytest.raises(CodetteError, match="config key 'train.parallel': expected auto | ddp | fsdp"):
        tiny_config(Path("x"), **{"train.parallel": "zero3"})


@pytest.mark.slow
def test_ctrl_c_saves_checkpoint_and_exits_cleanly(prepared: Path, tmp_path: Path) -> None:
    out = fresh_run(prepared, tmp_path)
    cfg = _config_file(tmp_path, out, max_steps=100000, eval_every=100000, save_every=50)
    proc = subprocess.Popen([sys.executable, "-m", "codette", "train", "-c", str(cfg)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / "model_step_50.pt").exists() and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert "resume" in err
    ckpt = latest_valid_checkpoint(out)
    assert ckpt is not None and load_checkpoint(ckpt)["step"] >= 50


@pytest.mark.slow
def test_nan_loss_stops_with_clear_message_and_keeps_last_good(prepared: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    out = fresh_run(prepared, tmp_path)
    real = torch.nn.functional.cross_entropy
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] == 15 else loss

    monkeypatch.setattr(torch.nn.functional, "cross_entropy", poisoned)  # the model's one loss call
    with pytest.raises(CodetteError, match=r"nan at step 15.*model_step_10\.pt"):
        stages.run_train(tiny_config(out), QUIET)
    assert (out / "model_step_10.pt").is_file()
    assert not (out / "model_final.pt").exists()
    assert load_checkpoint(out / "model_step_10.pt")["step"] == 10


@pytest.mark.slow
def test_resume_errors_and_auto_fallback(prepared: Path, tmp_path: Path) -> None:
    out = fresh_run(prepared, tmp_path)
    stages.run_train(tiny_config(out, **{"train.max_steps": 30}), QUIET)
    with pytest.raises(CodetteError, match="checkpoint not found: .*missing.pt"):
        stages.run_train(tiny_config(out), QUIET, resume=str(out / "missing.pt"))
    # A truncated newest checkpoint: explicit resume names it, auto falls back to the older valid one.
    newest = out / "model_step_40.pt"
    newest.write_bytes((out / "model_step_20.pt").read_bytes()[:1000])
    with pytest.raises(CodetteError, match="model_step_40.pt"):
        stages.run_train(tiny_config(out), QUIET, resume=str(newest))
    assert latest_valid_checkpoint(out) == out / "model_final.pt"
    os.unlink(out / "model_final.pt")
    assert latest_valid_checkpoint(out) == out / "model_step_20.pt"
    result = stages.run_train(tiny_config(out), QUIET, resume="auto")
    assert result.steps == 40
    # A checkpoint of another shape is refused with the differing field named.
    with pytest.raises(CodetteError, match="d_model=64 there but 32"):
        stages.run_train(tiny_config(out, **{"model.d_model": 32}), QUIET, resume=str(out / "model_step_20.pt"))


def test_bad_training_input_gives_clear_errors(prepared: Path, tmp_path: Path) -> None:
    out = fresh_run(prepared, tmp_path)
    with pytest.raises(CodetteError, match="unknown preset 'huge'"):
        stages.run_train(tiny_config(out, **{"model.preset": "huge"}), QUIET)
    with pytest.raises(CodetteError, match=r"n_heads \(5\) must divide d_model \(64\)"):
        stages.run_train(tiny_config(out, **{"model.n_heads": 5}), QUIET)
    with pytest.raises(CodetteError, match="seq_len=128 exceeds the model's context max_seq_len=64"):
        stages.run_train(tiny_config(out, **{"train.seq_len": 128}), QUIET)
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(CodetteError, match="cannot create output folder .*a_file/out"):
        stages.run_train(tiny_config(blocker / "out"), QUIET)
    # an empty run folder names the first step that fixes it (test_cli checks each missing-step message)
    with pytest.raises(CodetteError, match="nothing to train on .*run `codette data`, then `codette tokenizer`"):
        stages.run_train(tiny_config(tmp_path / "empty_run"), QUIET)


def test_atomic_writes_get_normal_file_permissions(tmp_path: Path) -> None:
    """mkstemp's 0600 must not leak: other users and tools (an Ollama server) read these files."""
    import os
    import stat

    from codette.fileio import atomic_write_text, current_umask

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "eval.json", "{}")
        assert stat.S_IMODE(os.stat(tmp_path / "eval.json").st_mode) == 0o644
        assert current_umask() == 0o022
    finally:
        os.umask(old)


def test_precision_auto_follows_the_hardware(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    monkeypatch.delenv(device_mod.DTYPE_ENV, raising=False)
    monkeypatch.setattr(device_mod, "native_bf16", lambda d: True)
    assert device_mod.resolve_dtype(cpu, "auto") == "bf16"
    with device_mod.autocast_for(cpu, "auto"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    monkeypatch.setattr(device_mod, "native_bf16", lambda d: False)
    assert device_mod.resolve_dtype(cpu, "auto") == "fp32"
    with device_mod.autocast_for(cpu, "auto"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    assert device_mod.resolve_dtype(cpu, "bf16") == "bf16" and device_mod.resolve_dtype(cpu, "fp32") == "fp32"
    with pytest.raises(CodetteError, match="unknown dtype 'fp8'; use auto, fp32 or bf16"):
        device_mod.resolve_dtype(cpu, "fp8")


def test_codette_dtype_decides_what_auto_means_and_never_overrides_a_named_dtype(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """CODETTE_DTYPE makes the machine-dependent choice explicit (the suite runs forced both ways)."""
    cpu = torch.device("cpu")
    for hardware in (True, False):
        monkeypatch.setattr(device_mod, "native_bf16", lambda d, h=hardware: h)
        for forced in ("bf16", "fp32", " BF16 "):
            monkeypatch.setenv(device_mod.DTYPE_ENV, forced)
            assert device_mod.resolve_dtype(cpu, "auto") == forced.strip().lower()
            assert device_mod.resolve_dtype(cpu, "fp32") == "fp32"
            assert device_mod.resolve_dtype(cpu, "bf16") == "bf16"
    monkeypatch.setenv(device_mod.DTYPE_ENV, "fp16")
    with pytest.raises(CodetteError, match="CODETTE_DTYPE='fp16': expected fp32 or bf16"):
        device_mod.resolve_dtype(cpu, "auto")


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.slow
def test_both_precisions_learn_and_are_recorded(prepared: Path, tmp_path: Path, dtype: str) -> None:
    out = fresh_run(prepared, tmp_path)
    stages.run_train(tiny_config(out, **{"train.dtype": dtype, "train.max_steps": 20}), QUIET)
    hist = list(losses(out / "logs").values())
    assert sum(hist[-5:]) / 5 < 0.9 * sum(hist[:5]) / 5
    start = [json.loads(line) for f in (out / "logs").glob("metrics_*.jsonl") for line in f.read_text().splitlines()]
    assert [r["precision"] for r in start if r["kind"] == "start"] == [dtype]
    state = load_checkpoint(out / "model_final.pt")
    assert all(t.dtype == torch.float32 for t in state["model"].values())  # autocast: weights stay fp32


def test_activation_checkpointing_gives_the_same_gradients_with_fewer_saved_tensors() -> None:
    """Recomputing each block in the backward pass changes memory, not the math."""
    from codette.model import CodetteModel, ModelConfig

    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=128, d_model=32, n_layers=3, n_heads=4, max_seq_len=32)
    model = CodetteModel(cfg)
    idx = torch.randint(0, 128, (2, 32))

    def grads_and_saved(ckpt: bool) -> tuple[list[torch.Tensor], int]:
        model.zero_grad()
        model.activation_checkpointing = ckpt
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
            out = model(idx, targets=idx)
            loss = out.loss_sum / out.n_targets
        loss.backward()
        return [p.grad.clone() for p in model.parameters()], sum(saved)

    plain, kept_plain = grads_and_saved(False)
    ckpt, kept_ckpt = grads_and_saved(True)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(plain, ckpt))
    assert kept_ckpt < kept_plain / 2, (kept_ckpt, kept_plain)
    with torch.no_grad():  # generation never checkpoints: the flag changes nothing without gradients
        model.activation_checkpointing = True
        flagged = model(idx)
        model.activation_checkpointing = False
        assert torch.equal(flagged, model(idx))


@pytest.mark.slow
def test_compiled_blocks_train_and_save_plain_keys(prepared: Path, tmp_path: Path) -> None:
    """train.compile compiles each block in place: the run's losses match eager ones closely, and the
    checkpoint's keys are the eager model's (no ``_orig_mod.``), so export and resume read it."""
    eager_out, compiled_out = fresh_run(prepared, tmp_path / "e"), fresh_run(prepared, tmp_path / "c")
    over = {"train.max_steps": 3, "train.eval_every": 3, "train.save_every": 3, "train.probes": 0}
    stages.run_train(tiny_config(eager_out, **over), QUIET)
    stages.run_train(tiny_config(compiled_out, **over, **{"train.compile": True}), QUIET)
    eager, compiled = losses(eager_out / "logs"), losses(compiled_out / "logs")
    assert sorted(compiled) == [1, 2, 3]
    assert all(abs(eager[k] - compiled[k]) < 1e-3 * abs(eager[k]) for k in eager), (eager, compiled)
    keys = set(load_checkpoint(compiled_out / "model_final.pt")["model"])
    assert keys == set(load_checkpoint(eager_out / "model_final.pt")["model"]) and not any("_orig_mod" in k for k in keys)


# ---- checkpoint selection -------------------------------------------------------------------------------
def test_best_tracker_selects_by_val_loss_and_by_a_behavioral_metric() -> None:
    t = BestTracker("val_loss")
    assert [t.update({"val_loss": v}) for v in (3.0, 2.5, 2.7, float("nan"), 2.5, 2.0)] == \
        [True, True, False, False, False, True]
    assert t.state() == {"name": "val_loss", "value": 2.0}
    b = BestTracker("tool_task_success")
    assert [b.update(r) for r in ({"val_loss": 1.0}, {"tool_task_success": 0.2}, {"tool_task_success": 0.1},
                                  {"tool_task_success": 0.5})] == [False, True, False, True]
    resumed = BestTracker("tool_task_success", saved=b.state())
    assert not resumed.update({"tool_task_success": 0.4}) and resumed.update({"tool_task_success": 0.6})
    assert BestTracker("val_loss", saved=None, saved_val_loss=1.5).update({"val_loss": 1.6}) is False
    assert direction("token_accuracy") == "max" and direction("perplexity") == "min"
    with pytest.raises(CodetteError, match="train.best_metric"):
        BestTracker("accuracy")


# ---- --init-from ----------------------------------------------------------------------------------------
SOURCE_STEPS = 10


@pytest.fixture(scope="module")
def source(prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run to start from (its own optimizer is at step 10)."""
    out = fresh_run(prepared, tmp_path_factory.mktemp("source"), "source")
    stages.run_train(_init_config(out, max_steps=SOURCE_STEPS, eval_every=5, save_every=5), QUIET)
    return out


def _init_config(out: Path, **train: object) -> RunConfig:
    return tiny_config(out, **{"train.probes": 0, **{f"train.{k}": v for k, v in train.items()}})


def _trainer(cfg: RunConfig) -> Trainer:
    """The trainer ``codette train`` builds for ``cfg`` in one process."""
    out = Path(cfg.out_dir)
    tok = CodetteTokenizer.load(out)
    model_cfg = stages._model_config(cfg, vocab_tokens=len(tok))
    return Trainer(cfg.train, model_cfg, ensure_packed(out, tok), out, init_from=cfg.train.init_from,
                   tokenizer_sha256=file_sha256(out / TOKENIZER_FILE))


@pytest.mark.slow
def test_init_from_starts_from_the_source_weights_with_a_fresh_optimizer(prepared: Path, source: Path,
                                                                         tmp_path: Path) -> None:
    best = load_checkpoint(source / "model_best.pt")
    assert best["step"] > 0 and best["optimizer"]["state"]
    trainer = _trainer(_init_config(fresh_run(prepared, tmp_path, "new"), init_from=str(source)))  # a run folder: its best
    weights = trainer.model.state_dict()
    assert weights.keys() == best["model"].keys() and all(torch.equal(weights[k], best["model"][k]) for k in weights)
    assert (trainer.step, trainer.position, trainer.best_val) == (0, 0, float("inf"))
    assert not trainer.optimizer.state_dict()["state"]
    trainer.wrap()
    done = trainer.train_step()
    assert done.step == 1 and done.lr == lr_at(0, trainer.cfg)
    steps = {float(s["step"]) for s in trainer.optimizer.state_dict()["state"].values()}
    assert steps == {1.0}  # AdamW's own step counter: new, not the source's


@pytest.mark.slow
def test_init_from_trains_a_new_run_and_says_where_it_started(prepared: Path, source: Path, tmp_path: Path) -> None:
    out = fresh_run(prepared, tmp_path, "new")
    start = source / "model_final.pt"
    stages.run_train(_init_config(out, init_from=str(start), max_steps=2, eval_every=2, save_every=100), QUIET)
    final = load_checkpoint(out / "model_final.pt")
    assert (final["step"], final["data_position"]) == (2, 2 * TINY["train"]["batch_size"])
    assert {float(s["step"]) for s in final["optimizer"]["state"].values()} == {2.0}
    assert final["train_config"]["init_from"] == str(start)
    records = [json.loads(line) for f in (out / "logs").glob("metrics_*.jsonl") for line in f.read_text().splitlines()]
    assert [r["init_from"] for r in records if r["kind"] == "start"] == [str(start)]
    fresh = fresh_run(prepared, tmp_path, "fresh")  # the same run from the seeded weights starts higher
    stages.run_train(_init_config(fresh, max_steps=2, eval_every=2, save_every=100), QUIET)
    assert losses(out / "logs")[1] < losses(fresh / "logs")[1] - 0.1


@pytest.mark.slow
def test_a_resumed_run_continues_its_own_checkpoint_not_init_from(prepared: Path, source: Path,
                                                                  tmp_path: Path) -> None:
    out = fresh_run(prepared, tmp_path, "run")
    cfg = _init_config(out, init_from=str(source), max_steps=4, eval_every=4, save_every=2)
    stages.run_train(_init_config(out, init_from=str(source), max_steps=2, eval_every=2, save_every=2), QUIET)
    own = load_checkpoint(out / "model_final.pt")
    trainer = _trainer(cfg)
    trainer.load_state_dict(trainer.checkpoints.load(out / "model_final.pt", trainer.model_cfg))
    assert trainer.step == 2 and all(torch.equal(v, own["model"][k]) for k, v in trainer.model.state_dict().items())
    result = stages.run_train(cfg, QUIET, resume="auto")
    assert result.steps == 4 and sorted(losses(out / "logs")) == [1, 2, 3, 4]
    records = [json.loads(line) for f in (out / "logs").glob("metrics_*.jsonl") for line in f.read_text().splitlines()]
    starts = sorted((r["step"], r["resumed_from"], r["init_from"]) for r in records if r["kind"] == "start")
    assert starts == [(0, "", str(source / "model_best.pt")), (2, str(out / "model_final.pt"), "")]


@pytest.mark.slow
def test_init_from_another_architecture_or_vocabulary_is_one_line_naming_what_differs(
        prepared: Path, source: Path, tmp_path: Path) -> None:
    out = fresh_run(prepared, tmp_path, "new")
    final = source / "model_final.pt"
    cfg = write_config(tmp_path / "cfg.json", {**TINY, "out_dir": str(out), "log_dir": str(out / "logs"),
                                               "model": {**TINY["model"], "d_model": 32}})
    proc = codette("train", "-c", str(cfg), "--init-from", str(final))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    said = "".join(proc.stderr.split())  # the console may wrap a long path
    assert said.endswith("".join(f"error: --init-from {final}: d_model 64 != 32 in this config".split())), proc.stderr
    with pytest.raises(CodetteError, match=r"model_final\.pt: n_layers 2 != 3 in this config$"):
        stages.run_train(tiny_config(out, **{"model.n_layers": 3, "train.init_from": str(final)}), QUIET)
    # Another tokenizer: more embedding rows, or as many rows but other tokens.
    other = fresh_run(prepared, tmp_path, "other_tokenizer")
    stages.run_tokenizer(tiny_config(other, **{"tokenizer.vocab_size": 700}), QUIET)
    with pytest.raises(CodetteError, match=r"--init-from .*model_final\.pt: vocab_size 512 != 7\d\d in this config "
                                           r"\(embedding rows: another tokenizer"):
        stages.run_train(_init_config(other, init_from=str(final)), QUIET)
    relabelled = tmp_path / "relabelled.pt"
    save_checkpoint({**load_checkpoint(final), "tokenizer_sha256": "0" * 64}, relabelled)
    with pytest.raises(CodetteError, match=r"relabelled\.pt: it was trained with another tokenizer \(tokenizer\.json "
                                           r"sha256 000000000000 != [0-9a-f]{12} here\)"):
        stages.run_train(_init_config(out, init_from=str(relabelled)), QUIET)


def test_init_from_names_a_missing_or_unusable_source(prepared: Path, tmp_path: Path) -> None:
    out = fresh_run(prepared, tmp_path, "new")
    with pytest.raises(CodetteError, match=r"--init-from .*nothere: no such checkpoint file or run folder"):
        stages.run_train(_init_config(out, init_from=str(tmp_path / "nothere")), QUIET)
    empty = tmp_path / "empty_run"
    empty.mkdir()
    with pytest.raises(CodetteError, match=r"empty_run holds no model: no model_best\.pt, model_final\.pt or "
                                           r"model_step_N\.pt"):
        stages.run_train(_init_config(out, init_from=str(empty)), QUIET)
    for bad in ("", "  ", "run/model.gguf"):
        with pytest.raises(CodetteError, match="config key 'train.init_from': expected a checkpoint"):
            tiny_config(out, **{"train.init_from": bad})
