"""A newcomer's first hour after `make quickstart`: every command it points to works as printed.

A run folder names its model in every verb (eval, export, generate as ask/chat/serve), `codette eval`
shows a bar for each long stage, the "Next:" lines suggest only what is installed, a GGUF without
llama.cpp names the make target that installs it, and a second quantisation of a model keeps the
first one's Modelfile.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from rich.console import Console
from typer.testing import CliRunner

from codette.backends.base import Chunk, collect
from codette.checkpoint import model_file, run_folder_model
from codette.cli import stages
from codette.cli.main import app
from codette.config import QUICKSTART, build_config
from codette.errors import CodetteError
from tests._pipeline import QUIET, codette, prepare, tiny_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder as `codette train` leaves it (2 steps of the tiny test model: model_best.pt, packed/)."""
    out = tmp_path_factory.mktemp("first_hour") / "codette_model"
    prepare(out)
    stages.run_train(tiny_config(out, **{"train.max_steps": 2, "train.eval_every": 2, "train.save_every": 2,
                                         "train.eval_batches": 1, "train.probes": 0}), QUIET)
    assert (out / "model_best.pt").is_file()
    return out


# ---- a run folder names a model everywhere ------------------------------------------------------------
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


def test_a_folder_without_a_model_is_a_one_line_error(tmp_path: Path) -> None:
    proc = codette("eval", str(tmp_path))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"{tmp_path} holds no model: no model_best.pt" in proc.stderr.replace("\n", "")


# ---- progress of every long stage of `codette eval` ---------------------------------------------------
class Hello:
    """A backend that says hello to everything (no calls): the natural set runs through it in seconds."""

    name = "hello"

    def stream(self, messages, tools=None, sampling=None):
        yield Chunk("Hello.", finish_reason="stop")

    def chat(self, messages, tools=None, sampling=None):
        return collect(self.stream(messages, tools, sampling)).text


def test_eval_reports_progress_of_every_stage(run_folder: Path, tmp_path: Path) -> None:
    from codette.evaluate.run import _add_behavior, evaluate_path

    seen: dict[str, list[tuple[int, int]]] = {}

    def record(stage: str, done: int, total: int) -> None:
        seen.setdefault(stage, []).append((done, total))

    evaluate_path(run_folder / "model_best.pt", max_batches=2, batch_size=2, probes_per_kind=1, samples=2,
                  max_new_tokens=4, on_progress=record)
    assert seen["lm"] == [(1, 2), (2, 2)]
    assert seen["samples"] == [(1, 2), (2, 2)]
    n = len(seen["probes"])
    assert n > 0 and seen["probes"] == [(i, n) for i in range(1, n + 1)]

    seen.clear()
    _add_behavior({}, Hello(), tmp_path / "model.pt", None, 0, 16, 1, None, "test", natural=True,
                  on_progress=record)
    n = len(seen["natural"])
    assert n > 100 and seen["natural"] == [(i, n) for i in range(1, n + 1)] and seen["samples"] == [(1, 1)]


def test_gguf_eval_reports_its_lm_progress(run_folder: Path, tmp_path: Path) -> None:
    from codette.evaluate.run import evaluate_path
    from codette.export import export_gguf
    from tests._runtimes import require

    require("llama_cpp")
    gguf_file = export_gguf(run_folder / "model_best.pt", tmp_path, "f32", modelfile=False).path
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(run_folder / name, tmp_path / name)
    seen: list[tuple[str, int, int]] = []
    evaluate_path(gguf_file, packed_dir=run_folder / "packed", max_batches=1, batch_size=3, probes_per_kind=0,
                  samples=1, max_new_tokens=4, on_progress=lambda *a: seen.append(a))
    assert seen == [("lm", 1, 3), ("lm", 2, 3), ("lm", 3, 3), ("samples", 1, 1)]


def test_codette_eval_shows_a_bar_per_stage(run_folder: Path, tmp_path: Path) -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=150)
    stages.run_eval(run_folder, console, output=tmp_path / "eval.json", max_batches=2, probes=1)
    text = out.getvalue()
    for label in ("test split: LM metrics", "behavioral probes", "sample chats"):
        assert label in text, label


# ---- the quickstart's "Next:" lines ---------------------------------------------------------------------
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
    assert cfg.model.max_seq_len == 768 and cfg.train.batch_size == 6 and cfg.train.max_steps == 900


# ---- llama.cpp: named by its make target ----------------------------------------------------------------
def test_a_gguf_without_llama_cpp_names_make_install_llama(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from codette.backends.gguf import GGUFBackend

    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # `import llama_cpp` now raises ImportError
    gguf_file = tmp_path / "x.gguf"
    gguf_file.write_bytes(b"GGUF")
    with pytest.raises(CodetteError, match=r"llama-cpp-python, which is not installed .*run `make install-llama`"):
        GGUFBackend(gguf_file)
    res = CliRunner().invoke(app, ["eval", str(gguf_file)])
    assert isinstance(res.exception, CodetteError) and "make install-llama" in str(res.exception)


def test_make_install_llama_builds_only_the_portable_runtime(tmp_path: Path) -> None:
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    venv = tmp_path / "venv"
    proc = subprocess.run([make, "-n", "install-llama", f"VENV={venv}"], cwd=ROOT, capture_output=True, text=True,
                          check=True)
    plan = proc.stdout
    assert "-DGGML_NATIVE=OFF" in plan and "-DGGML_AMX_INT8=OFF" in plan and "--no-cache-dir" in plan
    assert '"llama-cpp-python[server]==' in plan  # `python -m llama_cpp.server` works after it
    assert "install -e ." in plan and ".[dev]" not in plan  # Codette itself, not the dev extras


# ---- a second quantisation of a model -------------------------------------------------------------------
def test_a_second_quantisation_keeps_the_first_modelfile(run_folder: Path, tmp_path: Path) -> None:
    from codette.export import export_gguf

    ck = run_folder / "model_best.pt"
    first = export_gguf(ck, tmp_path, "f16")
    assert first.modelfile == tmp_path / "Modelfile" and first.modelfile_kept is None
    before = first.modelfile.read_bytes()
    res = CliRunner().invoke(app, ["export", str(run_folder), "--quant", "q8_0", "-o", str(tmp_path)],
                             terminal_width=300)
    assert res.exit_code == 0, res.output
    assert (tmp_path / "Modelfile").read_bytes() == before  # still the F16 file's
    second = (tmp_path / "Modelfile.q8_0").read_text()
    assert "FROM ./codette_tiny-q8_0.gguf" in second and f"PARAMETER num_ctx {first.context_length}" in second
    assert "#   ollama create codette:q8_0 -f Modelfile.q8_0 && ollama run codette:q8_0" in second
    output = " ".join(res.output.split())
    assert f"Modelfile: {tmp_path / 'Modelfile.q8_0'} ({tmp_path / 'Modelfile'} is codette_tiny-f16.gguf's" in output
    assert "ollama create codette:q8_0 -f Modelfile.q8_0" in output
    # the same quantisation again is refused without --force, and --force never touches the F16 Modelfile
    with pytest.raises(CodetteError, match="codette_tiny-q8_0.gguf already exists; pass --force"):
        export_gguf(ck, tmp_path, "q8_0")
    again = export_gguf(ck, tmp_path, "q8_0", force=True)
    assert again.modelfile == tmp_path / "Modelfile.q8_0" and (tmp_path / "Modelfile").read_bytes() == before
    # the F16 export again rewrites its own Modelfile
    assert export_gguf(ck, tmp_path, "f16", force=True).modelfile == tmp_path / "Modelfile"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Modelfile", "Modelfile.q8_0", "codette_tiny-f16.gguf",
                                                         "codette_tiny-q8_0.gguf"]


# ---- the docs' numbers are the recipe's -----------------------------------------------------------------
def test_training_guide_stages_use_the_quickstart_recipe(tmp_path: Path) -> None:
    """The guide's first block runs the stages with a config file it shows; that file is the quickstart's."""
    import re

    guide = (ROOT / "docs" / "TRAINING_GUIDE.md").read_text(encoding="utf-8")
    block = re.search(r"```toml\n# quickstart\.toml\n(.*?)```", guide, re.S)
    assert block, "docs/TRAINING_GUIDE.md lost its quickstart.toml block"
    (tmp_path / "quickstart.toml").write_text(block.group(1))
    shown = build_config(tmp_path / "quickstart.toml", {"out_dir": "x"})
    assert shown == QUICKSTART.build(None, {"out_dir": "x"})


def test_quick_start_troubleshooting_states_the_recipe_tokens() -> None:
    cfg = QUICKSTART.build()
    steps, batch, ctx = cfg.train.max_steps, cfg.train.batch_size, cfg.model.max_seq_len
    text = (ROOT / "docs" / "QUICK_START.md").read_text(encoding="utf-8")
    assert f"{steps} x {batch} x {ctx}" in text and f"{steps * batch * ctx / 1e6:.1f}M tokens" in text


def test_no_doc_calls_llama_cpp_server_without_the_context() -> None:
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for line in path.read_text(encoding="utf-8").splitlines():
            if "-m llama_cpp.server --model" in line:
                assert "--n_ctx" in line, f"{path.name}: {line}"


def test_eval_help_says_a_run_folder_is_taken() -> None:
    res = CliRunner().invoke(app, ["eval", "--help"], terminal_width=200)
    assert "A run folder" in res.output
