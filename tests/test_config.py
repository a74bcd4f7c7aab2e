"""Configuration: TOML/YAML/JSON files, precedence, strict keys and types, errors that name the key or file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from codette.config import QUICKSTART, RunConfig, TrainConfig, build_config, load_config_file, to_dict
from codette.errors import CodetteError

TOML = """
out_dir = "runs/a"

[data]
samples = 1234
sources = ["notes.txt", "chats.jsonl"]
synthetic = false

[model]
preset = "small-cpu"
n_kv_heads = 2
dropout = 0.1

[train]
lr = 3e-4
max_steps = 77
compile = true
"""

YAML = """
out_dir: runs/a
data:
  samples: 1234
  sources: [notes.txt, chats.jsonl]
  synthetic: false
model:
  preset: small-cpu
  n_kv_heads: 2
  dropout: 0.1
train:
  lr: 3.0e-4
  max_steps: 77
  compile: true
"""

DATA = {
    "out_dir": "runs/a",
    "data": {"samples": 1234, "sources": ["notes.txt", "chats.jsonl"], "synthetic": False},
    "model": {"preset": "small-cpu", "n_kv_heads": 2, "dropout": 0.1},
    "train": {"lr": 3e-4, "max_steps": 77, "compile": True},
}


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    return {
        "toml": _write(tmp_path, "run.toml", TOML),
        "yaml": _write(tmp_path, "run.yaml", YAML),
        "yml": _write(tmp_path, "run.yml", YAML),
        "json": _write(tmp_path, "run.json", json.dumps(DATA)),
    }


def _error(*args, **kwargs) -> str:
    with pytest.raises(CodetteError) as exc:
        build_config(*args, **kwargs)
    return str(exc.value)


def test_toml_yaml_and_json_give_the_same_config(files: dict[str, Path]) -> None:
    configs = {k: build_config(p) for k, p in files.items()}
    first = configs["toml"]
    assert all(c == first for c in configs.values()), {k: to_dict(c) for k, c in configs.items()}
    assert first.out_dir == "runs/a"
    assert first.data.samples == 1234 and first.data.synthetic is False
    assert first.data.sources == ["notes.txt", "chats.jsonl"]
    assert first.model.preset == "small-cpu" and first.model.n_kv_heads == 2 and first.model.dropout == 0.1
    assert first.train.lr == 3e-4 and isinstance(first.train.lr, float)
    assert first.train.max_steps == 77 and first.train.compile is True
    assert first.train.batch_size == TrainConfig().batch_size  # untouched keys keep their defaults


def test_no_file_gives_the_defaults() -> None:
    assert build_config() == RunConfig()
    assert build_config(None, {}) == RunConfig()


def test_overrides_beat_the_file_and_the_file_beats_defaults(files: dict[str, Path]) -> None:
    defaults = {"train": {"lr": 1.0, "max_steps": 1, "warmup_steps": 3}, "data": {"seed": 9}}
    cfg = build_config(files["toml"], {"train.max_steps": 5, "model.preset": "tiny"},
                       defaults=defaults)
    assert cfg.train.max_steps == 5  # override > file
    assert cfg.model.preset == "tiny"  # override > file
    assert cfg.train.lr == 3e-4  # file > defaults dict
    assert cfg.train.warmup_steps == 3  # defaults dict > built-in default
    assert cfg.data.seed == 9
    assert cfg.data.samples == 1234  # file > built-in default
    assert cfg.train.eval_every == TrainConfig().eval_every
    assert defaults == {"train": {"lr": 1.0, "max_steps": 1, "warmup_steps": 3}, "data": {"seed": 9}}  # not mutated


def test_none_overrides_are_ignored(files: dict[str, Path]) -> None:
    cfg = build_config(files["json"], {"train.max_steps": None, "model.d_model": None})
    assert cfg.train.max_steps == 77 and cfg.model.d_model is None


def test_unknown_top_level_key_names_it(tmp_path: Path) -> None:
    msg = _error(_write(tmp_path, "c.toml", 'outdir = "x"\n'))
    assert "'outdir'" in msg
    assert "out_dir" in msg  # the valid keys are listed


def test_unknown_nested_key_names_the_dotted_key(tmp_path: Path) -> None:
    assert "'train.lrr'" in _error(_write(tmp_path, "c.toml", "[train]\nlrr = 0.1\n"))
    assert "'train.lrr'" in _error(None, {"train.lrr": 0.1})
    assert "'model.heads'" in _error(_write(tmp_path, "c.yaml", "model:\n  heads: 4\n"))


@pytest.mark.parametrize(("key", "value"), [
    ("train.max_steps", "many"),
    ("train.max_steps", 2.5),
    ("train.max_steps", True),
    ("model.n_heads", 1.5),
    ("data.sources", 3),
    ("data.sources", {"a": 1}),
    ("train.lr", "fast"),
    ("train.compile", "maybe"),
    ("out_dir", 5),
])
def test_wrong_type_names_the_key(key: str, value: object) -> None:
    msg = _error(None, {key: value})
    assert f"'{key}'" in msg, msg
    assert repr(value) in msg


def test_packing_defaults_to_stream_the_quickstart_packs_best_fit_and_a_bad_value_names_the_key(tmp_path: Path) -> None:
    assert build_config().train.packing == "stream" and QUICKSTART.build().train.packing == "bestfit"
    assert build_config(_write(tmp_path, "c.toml", '[train]\npacking = "bestfit"\n')).train.packing == "bestfit"
    msg = _error(None, {"train.packing": "best-fit"})
    assert msg == "config key 'train.packing': expected stream | bestfit, got 'best-fit'", msg


def test_wrong_type_in_a_file_names_the_key(tmp_path: Path) -> None:
    assert "'train.max_steps'" in _error(_write(tmp_path, "c.toml", '[train]\nmax_steps = "many"\n'))
    assert "'model.n_heads'" in _error(_write(tmp_path, "c.json", '{"model": {"n_heads": 1.5}}'))
    assert "'data.sources'" in _error(_write(tmp_path, "c.yaml", "data:\n  sources: 3\n"))
    assert "'train'" in _error(_write(tmp_path, "c.json", '{"train": 3}'))


@pytest.mark.parametrize(("text", "expected"), [
    ("true", True), ("True", True), ("1", True), ("yes", True),
    ("false", False), ("FALSE", False), ("0", False), ("no", False),
])
def test_bools_from_strings(text: str, expected: bool) -> None:
    cfg = build_config(None, {"train.compile": text, "data.synthetic": text})
    assert cfg.train.compile is expected and cfg.data.synthetic is expected


def test_numbers_from_strings() -> None:
    cfg = build_config(None, {"train.max_steps": "12", "train.lr": "3e-4", "model.d_model": "64"})
    assert cfg.train.max_steps == 12 and cfg.train.lr == 3e-4 and cfg.model.d_model == 64
    assert isinstance(cfg.train.lr, float)
    assert build_config(None, {"train.lr": 1}).train.lr == 1.0  # an int is a fine float


def test_list_from_comma_string() -> None:
    cfg = build_config(None, {"data.sources": "a.txt,b/c.jsonl,"})
    assert cfg.data.sources == ["a.txt", "b/c.jsonl"]
    assert build_config(None, {"data.sources": "one.txt"}).data.sources == ["one.txt"]


def test_unsupported_extension_names_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "run.ini", "[train]\nlr = 1\n")
    msg = _error(path)
    assert str(path) in msg and ".ini" in msg


@pytest.mark.parametrize(("name", "text"), [
    ("bad.toml", "[train\nlr = 1\n"),
    ("bad.yaml", "train: [1, 2\n  lr: :\n"),
    ("bad.json", '{"train": {"lr": 1,}}'),
])
def test_unparsable_file_names_the_file(tmp_path: Path, name: str, text: str) -> None:
    path = _write(tmp_path, name, text)
    msg = _error(path)
    assert str(path) in msg and "parse" in msg


def test_config_file_that_is_not_utf8_names_the_file(tmp_path: Path) -> None:
    for suffix, raw in ((".toml", b'out_dir = "caf\xe9"\n'), (".yaml", b"out_dir: caf\xe9\n"),
                        (".json", b'{"out_dir": "caf\xe9"}')):
        path = tmp_path / f"latin1{suffix}"
        path.write_bytes(raw)
        assert str(path) in _error(path)


@pytest.mark.parametrize(("name", "text"), [("list.json", "[1, 2]"), ("scalar.yaml", "just text\n")])
def test_top_level_must_be_a_table(tmp_path: Path, name: str, text: str) -> None:
    path = _write(tmp_path, name, text)
    assert str(path) in _error(path)


def test_missing_file_names_it(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    msg = _error(path)
    assert str(path) in msg and "not found" in msg


def test_empty_yaml_is_an_empty_config(tmp_path: Path) -> None:
    assert load_config_file(_write(tmp_path, "empty.yaml", "")) == {}
    assert build_config(tmp_path / "empty.yaml") == RunConfig()


def test_tool_mix_defaults_are_the_generator_s_shares() -> None:
    """The shares the tool conversations have always had (docs/DATA.md), so one seed keeps giving one dataset."""
    mix = RunConfig().data.tool_mix
    assert (mix.no_tool, mix.chain, mix.drill, mix.call_error) == (0.08, 0.12, 0.3, 0.17)
    assert (mix.default_list, mix.all_list, mix.few_list, mix.reworded) == (0.55, 0.15, 0.2, 0.15)


def test_tool_mix_from_a_file_and_flags(tmp_path: Path) -> None:
    cfg = build_config(_write(tmp_path, "c.toml", "[data.tool_mix]\ndrill = 0.1\nreworded = 0\n"),
                       {"data.tool_mix.chain": "0.2"})
    assert (cfg.data.tool_mix.drill, cfg.data.tool_mix.reworded, cfg.data.tool_mix.chain) == (0.1, 0.0, 0.2)
    assert cfg.data.tool_mix.no_tool == 0.08  # the others keep their defaults
    assert to_dict(cfg)["data"]["tool_mix"]["drill"] == 0.1


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("data.tool_mix.drill", 1.5, "'data.tool_mix.drill'"),
    ("data.tool_mix.call_error", -0.1, "'data.tool_mix.call_error'"),
    ("data.tool_mix.few_list", "many", "'data.tool_mix.few_list'"),
    ("data.tool_mix.chains", 0.1, "'data.tool_mix.chains'"),
    ("data.tool_mix", 3, "'data.tool_mix'"),
])
def test_a_bad_tool_mix_value_names_its_key(key: str, value: object, expected: str) -> None:
    msg = _error(None, {key: value})
    assert expected in msg, msg


def test_tool_mix_shares_of_one_choice_may_not_exceed_one() -> None:
    msg = _error(None, {"data.tool_mix.drill": 0.9})
    assert "'data.tool_mix.no_tool' + 'data.tool_mix.chain' + 'data.tool_mix.drill'" in msg and "1.1" in msg
    msg = _error(None, {"data.tool_mix.all_list": 0.5})
    assert "'data.tool_mix.default_list' + 'data.tool_mix.all_list' + 'data.tool_mix.few_list'" in msg
    cfg = build_config(None, {"data.tool_mix.no_tool": 0.58})  # exactly 1: every tool conversation is a kind
    assert cfg.data.tool_mix.no_tool == 0.58
