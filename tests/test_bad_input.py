"""Bad input as a new user types it: every case ends with one line naming the flag, file or field.

The CLI runs in this process (``codette.cli.main.main`` with ``sys.argv`` set), so a case costs no
interpreter start and the full-disk cases can monkeypatch the writes.
"""

from __future__ import annotations

import errno
import json
import os
import re
import sys
import time
from pathlib import Path

import pytest

from codette.errors import CodetteError
from codette.jsonl import MAX_DEPTH, nesting_depth, read_jsonl

DEEP = "[" * 100_000 + "]" * 100_000  # json.loads alone raises RecursionError on this


def run_cli(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str]:
    """(exit code, stderr) of ``codette ARGS`` run in this process."""
    from codette.cli.main import main

    monkeypatch.setattr(sys, "argv", ["codette", *args])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main()
    return int(exc.value.code or 0), capsys.readouterr().err


def one_line_error(code: int, err: str, *needles: str) -> None:
    """Exit 2, one ``error:`` line, no traceback, and every needle in it."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, err
    assert "Traceback" not in err, err
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1, err
    text = " ".join(err.split())  # rich may wrap a long line
    for needle in needles:
        assert needle in text, (needle, err)


# ------------------------------------------------------------------------------------------------
# JSONL: one reader for every stage
# ------------------------------------------------------------------------------------------------
def test_jsonl_line_nested_100000_deep_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "deep.jsonl"
    path.write_text('{"text": "fine"}\n' + DEEP + "\n")
    with pytest.raises(CodetteError, match=rf"deep.jsonl:2: JSON nested deeper than {MAX_DEPTH} levels"):
        list(read_jsonl(path))


def test_jsonl_brackets_inside_strings_do_not_count_as_nesting(tmp_path: Path) -> None:
    path = tmp_path / "ok.jsonl"
    text = "[" * 5000 + "{" * 5000  # in a string: text, not structure
    path.write_text(json.dumps({"text": text, "n": [[1]]}) + "\n\n" + json.dumps({"text": "b"}) + "\n")
    assert [(n, r["text"][:3]) for n, r in read_jsonl(path)] == [(1, "[[["), (3, "b")]


@pytest.mark.timeout(120)  # the quadratic scan took hours here: fail, never hang the run
def test_jsonl_line_of_escaped_quotes_is_refused_in_linear_time(tmp_path: Path) -> None:
    """An unterminated string of escaped quotes, with enough brackets after it to make the depth scan run."""
    path = tmp_path / "quotes.jsonl"
    path.write_text('{"text": "' + '\\"' * (1024 * 1024) + "[" * 100 + "\n")  # 2 MiB
    start = time.monotonic()
    with pytest.raises(CodetteError, match=r"quotes.jsonl:1: not valid JSON \("):
        list(read_jsonl(path))
    assert time.monotonic() - start < 10


def test_nesting_depth_reads_strings_as_json_does() -> None:
    assert [nesting_depth(t) for t in ('[]', '{"a": "[[["}', '["\\\\", [[]]]', '["a\\"[[', '["abc[[[', '"')] == \
        [1, 1, 3, 1, 1, 0]
    assert nesting_depth("[" * 1000, stop_above=64) == 65  # stops as soon as the limit is passed


def test_jsonl_line_over_the_size_limit_is_refused_without_reading_it_whole(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    path.write_text(json.dumps({"text": "x" * 5000}) + "\n")
    with pytest.raises(CodetteError, match=r"big.jsonl:1: line longer than 1,000 bytes"):
        list(read_jsonl(path, max_line_bytes=1000))


def test_jsonl_not_utf8_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(CodetteError, match=r"latin1.jsonl:2: invalid UTF-8"):
        list(read_jsonl(path))


def test_data_source_nested_100000_deep_is_a_one_line_error(tmp_path: Path, capsys, monkeypatch) -> None:
    src = tmp_path / "mine.jsonl"
    src.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                            {"role": "assistant", "content": "hello"}]}) + "\n" + DEEP + "\n")
    code, err = run_cli(capsys, monkeypatch, "data", "--no-synthetic", "--source", str(src), "-o", str(tmp_path / "o"))
    one_line_error(code, err, "mine.jsonl:2", "nested deeper")


def test_every_jsonl_reader_refuses_deep_nesting(tmp_path: Path) -> None:
    """The user's data, the probe set, the data card and the metrics log all read through codette.jsonl."""
    from codette.data.card import build_card
    from codette.evaluate.probes import load_probes
    from codette.report import load_run

    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "val", "test"):
        (data / f"{split}.jsonl").write_text(DEEP + "\n")
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "metrics_1.jsonl").write_text(DEEP + "\n" + json.dumps({"kind": "start"}) + "\n")
    for read in (lambda: load_probes(data / "val.jsonl"), lambda: build_card(data),
                 lambda: load_run(tmp_path / "logs")):
        with pytest.raises(CodetteError, match=r"\.jsonl:1: JSON nested deeper"):
            read()


# ------------------------------------------------------------------------------------------------
# Training flags: checked in codette.config, so a config file gets the same error as a flag
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("flag", "value", "field", "expected"), [
    ("--eval-every", "0", "train.eval_every", "an integer >= 1"),
    ("--save-every", "0", "train.save_every", "an integer >= 1"),
    ("--lr", "nan", "train.lr", "a finite number > 0"),
    ("--lr", "-1", "train.lr", "a finite number > 0"),
    ("--seq-len", "-5", "train.seq_len", "an integer >= 1 or none (the model's context)"),
])
def test_bad_training_flag_names_the_field(tmp_path: Path, capsys, monkeypatch, flag: str, value: str, field: str,
                                           expected: str) -> None:
    code, err = run_cli(capsys, monkeypatch, "train", flag, value, "-o", str(tmp_path / "run"))
    one_line_error(code, err, f"config key '{field}'", expected)
    assert not (tmp_path / "run").exists()  # refused before anything was created


def test_bad_value_in_a_config_file_gets_the_same_error(tmp_path: Path, capsys, monkeypatch) -> None:
    cfg = tmp_path / "run.toml"
    cfg.write_text("[train]\neval_every = 0\n")
    code, err = run_cli(capsys, monkeypatch, "train", "-c", str(cfg), "-o", str(tmp_path / "run"))
    one_line_error(code, err, "config key 'train.eval_every': expected an integer >= 1, got 0")


# ------------------------------------------------------------------------------------------------
# Sampling flags: checked by SamplingConfig (every caller), named as flags by `codette generate`
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("args", "needles"), [
    (["--top-p", "5", "--top-k", "-3"], ["--top-k must be an integer >= 0 (0: off), got -3",
                                         "--top-p must be a number in (0, 1] (1: off), got 5.0"]),
    (["--max-new-tokens", "-1"], ["--max-new-tokens must be an integer >= 0, got -1"]),
    (["--temperature", "-1"], ["--temperature must be a finite number >= 0 (0: greedy), got -1.0"]),
])
def test_bad_sampling_flag_is_named_before_the_checkpoint_is_read(tmp_path: Path, capsys, monkeypatch,
                                                                  args: list[str], needles: list[str]) -> None:
    code, err = run_cli(capsys, monkeypatch, "generate", str(tmp_path / "missing.pt"), "-p", "hi", *args)
    one_line_error(code, err, *needles)
    assert "missing.pt" not in err


def test_sampling_config_refuses_what_torch_would_fail_on() -> None:
    from codette.backends.base import SamplingConfig, SamplingError

    with pytest.raises(SamplingError) as exc:
        SamplingConfig(temperature=float("nan"), top_p=0.0)
    assert [name for name, _, _ in exc.value.problems] == ["temperature", "top_p"]
    assert SamplingConfig(max_new_tokens=0, temperature=0.0, top_k=0, top_p=1.0).top_p == 1.0


def test_sampling_config_refuses_a_seed_outside_64_bits() -> None:
    """torch's generator raises mid-generation on such a seed (a 500 from `codette serve`)."""
    import torch

    from codette.backends.base import SamplingConfig, SamplingError

    for seed in (2 ** 64, -(2 ** 63) - 1, "7"):
        with pytest.raises(SamplingError, match="seed must be None or an integer from -2"):
            SamplingConfig(seed=seed)
    for seed in (2 ** 64 - 1, -(2 ** 63), 0, None):  # the whole range torch takes
        if SamplingConfig(seed=seed).seed is not None:
            torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------------------------
# Tokenizer files and chat templates
# ------------------------------------------------------------------------------------------------
NESTED_RANGES = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"


@pytest.fixture
def tokenizer_folder(tmp_path: Path, tokenizer) -> Path:
    """A run folder holding a valid tokenizer (the session's small BPE)."""
    out = tmp_path / "run"
    tokenizer.save(out)
    return out


def _set_config(folder: Path, value: object) -> None:
    (folder / "tokenizer_config.json").write_text(json.dumps(value))


@pytest.mark.parametrize(("config", "needle"), [
    (["not", "an", "object"], "expected a JSON object at the top level, got list"),
    ({"model_max_length": "2048"}, "'model_max_length' must be a positive integer, got '2048'"),
    ({"chat_template": NESTED_RANGES}, "asks for more than 100,000 range() items"),
    ({"codette_format_version": 2}, "'codette_format_version' is 2; this version of Codette reads format version 1"),
])
def test_bad_tokenizer_config_is_a_one_line_error(tokenizer_folder: Path, capsys, monkeypatch, config: object,
                                                  needle: str) -> None:
    _set_config(tokenizer_folder, config)
    code, err = run_cli(capsys, monkeypatch, "train", "-o", str(tokenizer_folder))
    one_line_error(code, err, "tokenizer_config.json", needle)


def test_saved_tokenizer_records_its_format_version(tokenizer_folder: Path) -> None:
    from codette.tokenizer import CodetteTokenizer
    from codette.tokenizer.bpe import FORMAT_KEY, FORMAT_VERSION

    assert json.loads((tokenizer_folder / "tokenizer_config.json").read_text())[FORMAT_KEY] == FORMAT_VERSION
    cfg = json.loads((tokenizer_folder / "tokenizer_config.json").read_text())
    del cfg[FORMAT_KEY]  # written before the key existed: version 1
    _set_config(tokenizer_folder, cfg)
    assert len(CodetteTokenizer.load(tokenizer_folder)) > 0


@pytest.mark.parametrize(("template", "needle"), [
    (NESTED_RANGES, "range() items"),
    ("{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}", "writes more than"),
    ("{{ 'a' * 1000000000 }}", "builds a sequence longer than"),
    ("{{ 10 ** 1000000000 }}", "computes a number too large"),
    ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "recurses without end"),
    ("{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(60) }}", "ran longer than"),
])
def test_chat_template_rendering_is_bounded(monkeypatch, template: str, needle: str) -> None:
    """A hostile template ends in a clear error within about a second, whatever it tries."""
    import time

    from codette.tokenizer import chat_template

    monkeypatch.setattr(chat_template, "MAX_RENDER_SECONDS", 0.5)
    t0 = time.perf_counter()
    with pytest.raises(CodetteError, match=f"cannot render conversation: .*{re.escape(needle)}"):
        chat_template.render([{"role": "user", "content": "hi"}], template=template)
    assert time.perf_counter() - t0 < 3.0


# ------------------------------------------------------------------------------------------------
# A full disk, temporaries left by kill -9, and $TMPDIR
# ------------------------------------------------------------------------------------------------
def _disk_full_for(monkeypatch: pytest.MonkeyPatch, final_name: str) -> None:
    """Writes to the temporary of ``final_name`` fail as on a full disk (ENOSPC); other files work."""
    real_fdopen = os.fdopen

    class FullDisk:
        def __init__(self, fh) -> None:
            self._fh = fh

        def write(self, data) -> int:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def __getattr__(self, name: str):
            return getattr(self._fh, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self._fh.close()

    def fdopen(fd: int, *args, **kwargs):
        fh = real_fdopen(fd, *args, **kwargs)
        name = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
        return FullDisk(fh) if name.startswith(f".{final_name}.") else fh

    monkeypatch.setattr(os, "fdopen", fdopen)


def _temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*.tmp"))


def test_full_disk_during_codette_data_names_the_file_and_replaces_nothing(tmp_path: Path, capsys,
                                                                            monkeypatch) -> None:
    data = tmp_path / "out" / "data"
    data.mkdir(parents=True)
    (data / "train.jsonl").write_text('{"text": "the previous build"}\n')
    _disk_full_for(monkeypatch, "train.jsonl")
    code, err = run_cli(capsys, monkeypatch, "data", "--samples", "40", "-o", str(tmp_path / "out"))
    one_line_error(code, err, f"cannot write {data / 'train.jsonl'}: No space left on device",
                   "nothing final was replaced (the existing train.jsonl is unchanged)")
    assert (data / "train.jsonl").read_text() == '{"text": "the previous build"}\n'
    assert not (data / "val.jsonl").exists() and _temporaries(tmp_path) == []


@pytest.mark.slow
def test_full_disk_during_codette_train_names_the_checkpoint(tmp_path: Path, capsys, monkeypatch) -> None:
    from tests._pipeline import TINY, prepare, write_config

    out = tmp_path / "run"
    prepare(out)
    (out / "model_best.pt").write_bytes(b"the previous best")
    cfg = write_config(tmp_path / "tiny.json", {**TINY, "log_dir": str(out / "logs"),
                                                "train": {**TINY["train"], "max_steps": 20, "probes": 0}})
    _disk_full_for(monkeypatch, "model_best.pt")
    code, err = run_cli(capsys, monkeypatch, "train", "-c", str(cfg), "-o", str(out))
    one_line_error(code, err, f"cannot write {out / 'model_best.pt'}: No space left on device",
                   "the existing model_best.pt is unchanged")
    assert (out / "model_best.pt").read_bytes() == b"the previous best"
    assert (out / "model_step_10.pt").is_file() and _temporaries(tmp_path) == []


def _stale(folder: Path, final: str, pid: int, directory: bool = False) -> Path:
    """A temporary as codette.fileio names them (checked below), as if its writer ``pid`` died."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f".{final}.{pid}.k9x2m4qz.tmp"
    if directory:
        path.mkdir()
    else:
        path.write_bytes(b"half")
    return path


@pytest.mark.slow
def test_temporaries_of_killed_writers_are_removed_at_the_start_of_a_run(tmp_path: Path) -> None:
    import subprocess

    from rich.console import Console

    from codette.cli import stages
    from codette.fileio import atomic_open
    from tests._pipeline import tiny_config

    out = tmp_path / "run"
    with atomic_open(out / "probe.txt", "w") as fh:  # the naming the cleanup relies on
        fh.write("x")
        (made,) = _temporaries(out)
    assert made.startswith(f".probe.txt.{os.getpid()}.")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    dead_pid, live_pid = int(dead.stdout), os.getppid()
    killed = [_stale(out / "data", "train.jsonl", dead_pid), _stale(out, "model_step_20.pt", dead_pid),
              _stale(out / "packed", "train.bin", dead_pid), _stale(out, "export.gguf", dead_pid, directory=True)]
    running = [_stale(out / "data", "val.jsonl", live_pid), _stale(out, "model_best.pt", live_pid)]
    quiet = Console(file=open(os.devnull, "w"))
    cfg = tiny_config(out, **{"train.max_steps": 2, "train.probes": 0})
    stages.run_data(cfg, quiet)
    assert not killed[0].exists() and running[0].exists()  # `codette data` cleans its folder
    stages.run_tokenizer(cfg, quiet)
    stages.run_train(cfg, quiet)
    assert not any(p.exists() for p in killed)
    assert all(p.exists() for p in running)  # a live process may still be writing those


@pytest.mark.slow
def test_a_run_leaves_nothing_in_tmpdir(tmp_path: Path, monkeypatch) -> None:
    """data (the tool sandbox's scratch workspaces, its Python worker), tokenizer and train."""
    import tempfile

    from rich.console import Console

    from codette.cli import stages
    from tests._pipeline import prepare, tiny_config

    scratch = tmp_path / "tmpdir"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    out = tmp_path / "run"
    prepare(out)
    stages.run_train(tiny_config(out, **{"train.max_steps": 2, "train.probes": 0}),
                     Console(file=open(os.devnull, "w")))
    assert (out / "model_final.pt").is_file()
    assert sorted(p.name for p in scratch.iterdir()) == []


# ------------------------------------------------------------------------------------------------
# Where the logs go
# ------------------------------------------------------------------------------------------------
def test_log_dir_defaults_to_the_run_folder_and_an_explicit_one_is_kept() -> None:
    from codette.config import RunConfig, build_config

    assert build_config(None, {"out_dir": "runs/x"}).log_dir == str(Path("runs/x") / "training_logs")
    assert RunConfig().log_dir == str(Path("codette_model") / "training_logs")
    assert build_config(None, {"out_dir": "runs/x", "log_dir": "elsewhere"}).log_dir == "elsewhere"


@pytest.mark.slow
def test_train_writes_its_logs_beside_the_run_not_in_the_current_folder(tmp_path: Path, capsys,
                                                                        monkeypatch) -> None:
    from tests._pipeline import TINY, prepare, write_config

    out = tmp_path / "run"
    prepare(out)
    cfg = write_config(tmp_path / "tiny.json", {**TINY, "train": {**TINY["train"], "max_steps": 2, "probes": 0}})
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    code, _ = run_cli(capsys, monkeypatch, "train", "-c", str(cfg), "-o", str(out))
    assert code == 0
    assert len(list((out / "training_logs").glob("metrics_*.jsonl"))) == 1
    assert list(cwd.iterdir()) == []
    assert json.loads((out / "run_config.json").read_text())["log_dir"] == str(out / "training_logs")
