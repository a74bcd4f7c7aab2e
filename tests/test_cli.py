"""The command line as a user meets it: verbs, entry points, clear one-line errors, the quickstart."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import typer
from typer.testing import CliRunner

from codette.backends import LocalBackend, SamplingConfig
from codette.cli import stages
from codette.cli.main import AgentOptions, app
from codette.config import LONG, QUICKSTART, TrainConfig
from codette.model import CodetteModel, MemoryEstimate, ModelConfig
from codette.train.device import autocast_for
from codette.train.schedule import build_optimizer
from tests._pipeline import TINY, codette, write_config

ROOT = Path(__file__).resolve().parents[1]


VERBS = ("data", "tokenizer", "train", "eval", "generate", "presets", "quickstart", "export", "inspect", "report",
         "chat", "ask", "serve")
# The options each verb takes, as README.md and docs/TRAINING_GUIDE.md list them.
CONFIG_VERBS = {"data", "tokenizer", "train", "quickstart"}  # --config FILE and --out-dir
OUTPUT_OPTIONS = {"data": "--out-dir", "tokenizer": "--out-dir", "train": "--out-dir", "quickstart": "--out-dir",
                  "export": "--out-dir", "report": "--out", "eval": "--output"}


def test_entry_points_show_every_verb() -> None:
    proc = codette("--help", check=True)
    listed = set(re.findall(r"^\W?\s*([a-z]+) {2,}\S", proc.stdout, flags=re.MULTILINE))
    assert listed == set(VERBS), f"the help lists {sorted(listed)}"
    script = subprocess.run([sys.executable, str(ROOT / "quick_train.py"), "--help"], capture_output=True, text=True)
    assert script.returncode == 0 and "--max-steps" in script.stdout


@pytest.mark.parametrize("verb", VERBS)
def test_each_verb_takes_the_options_the_docs_name(verb: str) -> None:
    result = CliRunner().invoke(app, [verb, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    text = result.output
    options = set(re.findall(r"(--[a-z][a-z-]*)", text))
    assert ("--config" in options) == (verb in CONFIG_VERBS), sorted(options)
    for option in ("--out-dir", "--out", "--output"):
        assert (option in options) == (OUTPUT_OPTIONS.get(verb) == option), (option, sorted(options))


def test_chat_and_ask_offer_the_same_agent_options() -> None:
    """Both verbs take every AgentOptions field as the same flag: names, help text and default."""
    names = {f.name for f in dataclasses.fields(AgentOptions)}
    commands = typer.main.get_command(app).commands

    def agent_flags(verb: str) -> dict[str, tuple]:
        return {p.name: (tuple(p.opts), getattr(p, "help", None), p.default) for p in commands[verb].params
                if p.name in names}

    assert set(agent_flags("chat")) == names and agent_flags("chat") == agent_flags("ask")
    assert {p.name for p in commands["chat"].params} == names  # chat takes nothing else
    shown = {verb: CliRunner().invoke(app, [verb, "--help"], terminal_width=200).output for verb in ("chat", "ask")}
    for opts, help_text, _ in agent_flags("chat").values():
        for verb, text in shown.items():
            assert opts[0] in text and " ".join(help_text.split()[:4]) in " ".join(text.split()), (verb, opts)


@pytest.mark.parametrize(("flag", "held"), [([], True), (["--no-constrain"], False), (["--constrain"], True)])
def test_eval_passes_constrain_to_the_natural_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, flag: list[str],
                                                  held: bool) -> None:
    seen: dict = {}
    monkeypatch.setattr(stages, "run_eval", lambda *a, **kw: seen.update(kw))
    model = tmp_path / "model_best.pt"
    model.write_bytes(b"")
    result = CliRunner().invoke(app, ["eval", str(model), "--natural", *flag])
    assert result.exit_code == 0, result.output
    assert seen["natural"] is True and seen["constrain"] is held


def test_presets_json_has_exact_counts_and_memory() -> None:
    rows = {r["preset"]: r for r in json.loads(codette("presets", "--json", check=True).stdout)}
    assert set(rows) == {"tiny", "small-cpu", "1.3b", "2.7b", "5.3b"}
    for name, nominal in (("1.3b", 1.3e9), ("2.7b", 2.7e9), ("5.3b", 5.3e9)):
        assert abs(rows[name]["params"] / nominal - 1) < 0.05
    for row in rows.values():
        assert row["train_bytes"] == 16 * row["params"] and row["gguf_f16_bytes"] == 2 * row["params"]
    assert 5e6 <= rows["tiny"]["params"] <= 15e6 and 5e6 <= rows["small-cpu"]["params"] <= 15e6
    table = codette("presets", check=True).stdout
    assert f"{16 * rows['tiny']['params'] / 1e6:,.1f} MB" in table and "16 B/param" in table


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_train_memory_is_what_the_trainer_keeps(dtype: str) -> None:
    """The presets' train memory: the bytes of weights, gradients and AdamW state after a real step."""
    cfg = ModelConfig(vocab_size=128, d_model=32, n_layers=2, n_heads=4, max_seq_len=16)
    model = CodetteModel(cfg)
    optimizer = build_optimizer(model, TrainConfig(), fused=False)
    x = torch.randint(0, cfg.vocab_size, (2, cfg.max_seq_len))
    with autocast_for(torch.device("cpu"), dtype):
        logits = model(x)
    torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), x.flatten()).backward()
    optimizer.step()
    params = list(model.parameters())
    kept = sum(p.nbytes + p.grad.nbytes for p in params)
    kept += sum(t.nbytes for state in optimizer.state.values() for t in state.values() if t.dim() > 0)
    assert kept == MemoryEstimate.of(cfg).train_bytes == 16 * model.num_parameters()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["data", "--source", "/nonexistent/corpus.txt", "--no-synthetic"], "data file not found: /nonexistent/corpus.txt"),
        (["train", "--preset", "huge"], "unknown preset 'huge'"),
        (["eval", "/nonexistent/model_best.pt"], "checkpoint not found: /nonexistent/model_best.pt"),
    ],
)
def test_user_errors_are_one_line_without_traceback(tmp_path: Path, args: list[str], message: str) -> None:
    proc = codette(*args, "-o", str(tmp_path / "out")) if args[0] != "eval" else codette(*args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_each_missing_step_is_named_by_the_error(tmp_path: Path, tokenizer) -> None:
    """train and tokenizer without what they read name the command that makes it, in pipeline order."""
    out = tmp_path / "out"

    def error(*args: str) -> str:
        proc = codette(*args, "-o", str(out))
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        return " ".join(proc.stderr.split())  # rich may wrap a long line

    assert "no data and no tokenizer; run `codette data`, then `codette tokenizer`" in error("train")
    assert f"no train split at {out / 'data' / 'train.jsonl'}; run `codette data` first" in error("tokenizer")
    (out / "data").mkdir(parents=True)
    (out / "data" / "train.jsonl").write_text(json.dumps({"text": "hello"}) + "\n")
    assert "train one with `codette tokenizer`" in error("train")
    (out / "data" / "train.jsonl").unlink()
    tokenizer.save(out)  # a tokenizer but no data to pack
    assert f"no train split at {out / 'data' / 'train.jsonl'}; run `codette data` first" in error("train")


def test_config_file_errors_name_the_key(tmp_path: Path) -> None:
    bad_key = tmp_path / "bad.toml"
    bad_key.write_text("[train]\nlearning_rate = 0.1\n")
    proc = codette("train", "-c", str(bad_key), "-o", str(tmp_path))
    assert proc.returncode == 2 and "unknown config key 'train.learning_rate'" in proc.stderr
    bad_type = tmp_path / "bad.yaml"
    bad_type.write_text("train:\n  max_steps: lots\n")
    proc = codette("train", "-c", str(bad_type), "-o", str(tmp_path))
    assert proc.returncode == 2 and "config key 'train.max_steps': expected int" in proc.stderr


@pytest.mark.slow
def test_quickstart_runs_every_stage(tmp_path: Path) -> None:
    """The quickstart wiring on a tiny model: data, tokenizer, the copy stage then the chat stage from its
    weights, eval, samples, eval.json."""
    out = tmp_path / "codette_model"
    cfg = write_config(tmp_path / "qs.json", {**TINY, "log_dir": str(tmp_path / "logs"),
                                              "train": {**TINY["train"], "max_steps": 30},
                                              "copy_stage": {"steps": 10, "documents": 40}})
    proc = codette("quickstart", "-c", str(cfg), "-o", str(out), check=True)
    report = json.loads((out / "eval.json").read_text())
    for key in ("loss", "token_accuracy", "perplexity", "train_tokens_per_second", "wall_seconds",
                "samples"):
        assert key in report, key
    assert report["train_steps"] == 40 and report["target_tokens"] > 0 and report["split"] == "test"
    stages = report["train_stages"]
    assert [(name, stages[name]["steps"]) for name in stages] == [("copy", 10), ("chat", 30)]
    copy_dir = out / "copy_stage"
    assert stages["copy"]["checkpoint"] == str(copy_dir / "model_final.pt")
    assert (copy_dir / "tokenizer.json").read_bytes() == (out / "tokenizer.json").read_bytes()
    copy_texts = [json.loads(line) for line in (copy_dir / "data" / "train.jsonl").read_text().splitlines()]
    assert copy_texts and all(r["category"] == "copy" for r in copy_texts)
    (metrics,) = (tmp_path / "logs").glob("metrics_*.jsonl")  # the chat stage's log (the copy stage logs in its folder)
    start = next(r for r in map(json.loads, metrics.read_text().splitlines()) if r["kind"] == "start")
    assert start["init_from"] == str(copy_dir / "model_final.pt")
    assert list((copy_dir / "training_logs").glob("metrics_*.jsonl"))
    assert "train stage 1/2: copy" in proc.stdout and "train stage 2/2: chat" in proc.stdout
    assert len(report["samples"]) == 4 and all(isinstance(s["assistant"], str) for s in report["samples"])
    for name in ("tokenizer.json", "tokenizer_config.json", "model_final.pt", "model_best.pt", "run_config.json",
                 "data/train.jsonl", "data/val.jsonl", "data/test.jsonl", "packed/train.bin", "packed/test.bin",
                 "codette_tiny-f16.gguf", "Modelfile"):
        assert (out / name).is_file(), name
    assert "Held-out evaluation" in proc.stdout
    # the sample chats are shown as people meet them: control markers out (eval.json keeps the raw reply)
    assert "<consciousness>" not in proc.stdout and "<perspective>" not in proc.stdout
    assert report["gguf"].endswith("codette_tiny-f16.gguf") and "ollama create codette" in proc.stdout
    gen = codette("generate", str(out / "model_final.pt"), "-p", "Who are you?", "--temperature", "0",
                  "--max-new-tokens", "8", check=True)
    expected = LocalBackend.from_checkpoint(out / "model_final.pt").chat([{"role": "user", "content": "Who are you?"}],
                                                         sampling=SamplingConfig(8, temperature=0.0))
    assert gen.stdout.strip() == expected


# ---- a run folder names its model in every verb; the quickstart's "Next:" lines --------------------------
def _exported(modelfile: str | None = "Modelfile") -> SimpleNamespace:
    folder = Path("codette_model")
    return SimpleNamespace(path=folder / "codette_tiny-f16.gguf", context_length=768,
                           modelfile=folder / modelfile if modelfile else None)


def test_next_lines_suggest_only_what_is_installed() -> None:
    out = Path("codette_model")
    bare = "\n".join(stages.next_steps(out, _exported(), llama_server=False, ollama=False))
    assert "codette serve codette_model   (chat page" in bare and 'generate codette_model --prompt' in bare
    assert "make install-llama, then " in bare and "ollama" not in bare
    assert "-m llama_cpp.server --model codette_model/codette_tiny-f16.gguf --n_ctx 768" in bare
    full = "\n".join(stages.next_steps(out, _exported("Modelfile.f16"), llama_server=True, ollama=True))
    assert "make install-llama" not in full and "--n_ctx 768" in full
    assert "cd codette_model && ollama create codette:f16 -f Modelfile.f16 && ollama run codette:f16" in full


def test_next_lines_name_the_venv_when_the_shell_would_not_find_it(monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = Path(sys.executable).parent
    monkeypatch.setenv("PATH", str(bin_dir))
    assert stages.command("codette") == "codette"
    monkeypatch.setenv("PATH", "/nonexistent")
    assert Path(stages.command("codette")).absolute() == (bin_dir / "codette").absolute()


def test_quickstart_context_is_the_one_printed() -> None:
    """The --n_ctx the Next line passes is the model's; the quickstart's is 768 (docs say so too)."""
    cfg = QUICKSTART.build()
    assert cfg.model.max_seq_len == 768 and cfg.train.batch_size == 6 and cfg.train.max_steps == 800


def test_the_long_recipe_is_the_quickstart_with_more_of_each_stage_and_a_bad_recipe_is_one_line() -> None:
    quick, long = QUICKSTART.build(), LONG.build()
    assert long.model == quick.model and long.tokenizer == quick.tokenizer and long.train.lr == quick.train.lr
    assert long.copy_stage.steps > quick.copy_stage.steps > 0 and long.train.max_steps > quick.train.max_steps
    assert long.data.samples > quick.data.samples and long.copy_stage.documents > quick.copy_stage.documents
    proc = codette("quickstart", "--recipe", "huge")
    assert proc.returncode == 2 and "--recipe: expected quickstart or long, got 'huge'" in proc.stderr


def test_eval_kinds_names_the_flag_and_the_kinds_it_takes(tmp_path: Path) -> None:
    proc = codette("eval", str(tmp_path), "--kinds", "tools")
    assert proc.returncode == 2 and "--kinds: expected names from tool, no_tool, identity, perspective, got 'tools'" \
        in proc.stderr


def test_eval_help_says_a_run_folder_is_taken() -> None:
    res = CliRunner().invoke(app, ["eval", "--help"], terminal_width=200)
    assert "A run folder" in res.output


@pytest.mark.slow
def test_generate_eval_and_export_take_a_run_folder(run_folder: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["-p", "Who are you?", "--temperature", "0", "--max-new-tokens", "6"]
    by_folder = runner.invoke(app, ["generate", str(run_folder), *args])
    by_file = runner.invoke(app, ["generate", str(run_folder / "model_best.pt"), *args])
    assert by_folder.exit_code == 0 and by_file.exit_code == 0, (by_folder.output, by_file.output)
    assert by_folder.stdout == by_file.stdout

    out = tmp_path / "eval.json"
    res = runner.invoke(app, ["eval", str(run_folder), "--probes", "0", "--max-batches", "1", "--output", str(out)])
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text())["checkpoint"] == str(run_folder / "model_best.pt")

    res = runner.invoke(app, ["export", str(run_folder), "--quant", "f16", "-o", str(tmp_path / "gguf")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "gguf" / "codette_tiny-f16.gguf").is_file()
