"""The layering rules (docs/ARCHITECTURE.md, "Layering"), checked by import in fresh interpreters.

Each check imports every module of a stage, found on disk (so a lazy ``__init__`` cannot hide an
import), in a new Python process, and compares what ``sys.modules`` then holds with what the stage
may import. Imports made inside functions are not seen; the rules are about what loading a stage
drags in.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest

import codette

SRC = Path(codette.__file__).parent
STDLIB = frozenset(sys.stdlib_module_names)
# Dependency-free helpers every stage may use: the persona, the tool table, the one error type, atomic files,
# JSONL, and the lazy-attribute glue.
NEUTRAL = {"codette.persona", "codette.tooltable", "codette.errors", "codette.fileio", "codette.jsonl",
           "codette.lazy"}
STAGES = ("model", "tokenizer", "data", "checkpoint", "train", "evaluate", "backends", "tools", "export", "report",
          "agent", "serve", "cli")


def modules_of(unit: str) -> list[str]:
    """``unit`` and, for a package, every module below it (``__main__`` excepted)."""
    path = SRC / unit.removeprefix("codette.").replace(".", "/")
    if not path.is_dir():
        return [unit]
    return [unit] + [m.name for m in pkgutil.walk_packages([str(path)], prefix=unit + ".")
                     if not m.name.endswith("__main__")]


def loaded_after(modules: list[str]) -> set[str]:
    """Every module a fresh interpreter holds after importing ``modules``."""
    code = ("import importlib, json, sys\n"
            "for m in json.loads(sys.argv[1]):\n"
            "    importlib.import_module(m)\n"
            "print(json.dumps(sorted(sys.modules)))")
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(modules)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    return set(json.loads(proc.stdout.splitlines()[-1]))


def unit_of(module: str) -> str:
    """``codette.data.pack`` -> ``codette.data``: the stage (or top-level module) a module belongs to."""
    return ".".join(module.split(".")[:2])


def project_units(loaded: set[str], unit: str) -> set[str]:
    return {unit_of(m) for m in loaded if m.startswith("codette.")} - {unit}


def third_party(loaded: set[str]) -> set[str]:
    """Top-level third-party packages (Cython's runtime modules, loaded with any compiled extension, aside)."""
    tops = {m.split(".")[0] for m in loaded} - STDLIB - {"codette", "__main__", "_distutils_hack"}
    return {t for t in tops if not t.startswith(("_cython", "cython_runtime"))}


_CACHE: dict[str, set[str]] = {}


def loaded_by(unit: str) -> set[str]:
    if unit not in _CACHE:
        _CACHE[unit] = loaded_after(modules_of(unit))
    return _CACHE[unit]


def test_every_stage_folder_has_a_rule() -> None:
    """A new stage (a folder under codette/) must get a rule here and in docs/ARCHITECTURE.md."""
    folders = {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert folders == set(STAGES), folders ^ set(STAGES)


# -- the dependency-free modules ----------------------------------------------------------------------
@pytest.mark.parametrize("unit", ["codette.persona", "codette.tooltable", "codette.errors", "codette.lazy"])
def test_leaf_modules_import_nothing_of_the_project_or_third_party(unit: str) -> None:
    loaded = loaded_by(unit)
    assert not project_units(loaded, unit)
    assert not third_party(loaded), third_party(loaded)


@pytest.mark.parametrize(("unit", "allowed_third_party"), [
    ("codette.fileio", set()), ("codette.jsonl", set()), ("codette.tensorboard", set()),
    ("codette.config", {"yaml", "tomli"}),
])
def test_helper_modules_import_only_the_error_type(unit: str, allowed_third_party: set[str]) -> None:
    loaded = loaded_by(unit)
    assert project_units(loaded, unit) <= {"codette.errors"}, project_units(loaded, unit)
    assert third_party(loaded) <= allowed_third_party, third_party(loaded)


def test_import_codette_loads_no_torch() -> None:
    assert "torch" not in loaded_after(["codette"])


# -- the stages ---------------------------------------------------------------------------------------
def test_model_imports_only_torch() -> None:
    """Nothing of the project, and no third-party package that importing torch alone does not load."""
    loaded = loaded_by("codette.model")
    assert not project_units(loaded, "codette.model"), project_units(loaded, "codette.model")
    assert third_party(loaded) <= third_party(loaded_after(["torch"])), third_party(loaded)


def test_model_config_and_presets_load_no_torch() -> None:
    """`codette presets` reads these: shapes and parameter counts are plain Python."""
    assert "torch" not in loaded_after(["codette.model.config", "codette.model.presets"])


# stage -> the project units it may import (besides NEUTRAL). Anything else fails the test.
MAY_IMPORT: dict[str, set[str]] = {
    "codette.tokenizer": {"codette.config"},
    "codette.tools": set(),
    "codette.data": {"codette.config", "codette.tokenizer", "codette.tools"},
    "codette.checkpoint": {"codette.model"},
    "codette.train": {"codette.model", "codette.data", "codette.checkpoint", "codette.evaluate", "codette.config",
                      "codette.tokenizer", "codette.rng"},
    "codette.evaluate": {"codette.model", "codette.backends", "codette.tools", "codette.tokenizer",
                         "codette.checkpoint", "codette.rng", "codette.tensorboard", "codette.data"},
    "codette.backends": {"codette.model", "codette.tokenizer", "codette.checkpoint", "codette.tools"},
    "codette.export": {"codette.checkpoint", "codette.model", "codette.tokenizer"},
    "codette.report": {"codette.evaluate", "codette.tensorboard"},
    "codette.agent": {"codette.backends", "codette.tools", "codette.model", "codette.evaluate", "codette.tokenizer",
                      "codette.checkpoint"},
    "codette.serve": {"codette.agent", "codette.backends", "codette.tools", "codette.model", "codette.evaluate",
                      "codette.tokenizer", "codette.checkpoint"},
}


@pytest.mark.parametrize("unit", sorted(MAY_IMPORT))
def test_stage_imports_only_what_its_rule_allows(unit: str) -> None:
    extra = project_units(loaded_by(unit), unit) - NEUTRAL - MAY_IMPORT[unit]
    assert not extra, f"{unit} imports {sorted(extra)}"


@pytest.mark.parametrize(("unit", "never"), [
    ("codette.export", {"codette.data", "codette.tools", "codette.train"}),
    ("codette.tools", {"codette.data", "codette.train"}),
    ("codette.tokenizer", {"codette.data", "codette.train"}),
    ("codette.data", {"codette.train"}),
    ("codette.evaluate", {"codette.train", "codette.report"}),
    ("codette.backends", {"codette.train", "codette.export"}),
    ("codette.report", {"codette.train", "codette.data", "codette.model"}),
    ("codette.agent", {"codette.train", "codette.data", "codette.export", "codette.report"}),
    ("codette.serve", {"codette.train", "codette.data", "codette.export", "codette.report"}),
])
def test_the_guides_rules(unit: str, never: set[str]) -> None:
    """The rules as the developers' guide words them (a subset of MAY_IMPORT, kept readable)."""
    assert not project_units(loaded_by(unit), unit) & never


def test_evaluate_reads_only_the_packed_split_format_of_data() -> None:
    """The packed split's reader (pack), its batches (loader) and the split names (split); never the generator
    or the sources."""
    data = {m for m in loaded_by("codette.evaluate") if unit_of(m) == "codette.data"}
    assert data <= {"codette.data", "codette.data.pack", "codette.data.loader", "codette.data.split"}, data


def test_report_reads_only_the_interval_statistics_of_evaluate_and_loads_no_torch() -> None:
    loaded = loaded_by("codette.report")
    assert {m for m in loaded if unit_of(m) == "codette.evaluate"} <= {"codette.evaluate", "codette.evaluate.stats"}
    assert "torch" not in loaded


def test_cli_imports_stages_only_where_a_verb_runs() -> None:
    """Loading the CLI (every verb's definition) loads no torch and no stage beyond light constants."""
    loaded = loaded_by("codette.cli")
    assert "torch" not in loaded
    heavy = {"codette.model", "codette.checkpoint", "codette.train", "codette.backends", "codette.export",
             "codette.report", "codette.agent", "codette.tools", "codette.tokenizer", "codette.serve"}
    assert not project_units(loaded, "codette.cli") & heavy, project_units(loaded, "codette.cli") & heavy


# -- the CLI verbs that must start without torch -----------------------------------------------------
_RUN_CLI = ("import atexit, json, sys\n"
            "atexit.register(lambda: sys.stderr.write('\\nMODULES ' + json.dumps(sorted(sys.modules)) + '\\n'))\n"
            "sys.argv = ['codette', *json.loads(sys.argv[1])]\n"
            "from codette.cli.main import main\n"
            "main()\n")


def run_cli(*args: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run ``codette ARGS`` in a fresh interpreter; its result and the modules loaded when it exited."""
    proc = subprocess.run([sys.executable, "-c", _RUN_CLI, json.dumps(list(args))], capture_output=True,
                          text=True, timeout=300)
    line = [ln for ln in proc.stderr.splitlines() if ln.startswith("MODULES ")][-1]
    return proc, set(json.loads(line.removeprefix("MODULES ")))


def _small_gguf(path: Path) -> Path:
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("layering-test")
    writer.add_context_length(16)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.mark.parametrize("verb", [["--help"], ["presets"], ["presets", "--json"], ["inspect", "GGUF"],
                                  ["inspect", "GGUF", "--json"]])
def test_light_verbs_do_not_import_torch(verb: list[str], tmp_path: Path) -> None:
    gguf_path = _small_gguf(tmp_path / "small.gguf")
    args = [str(gguf_path) if a == "GGUF" else a for a in verb]
    proc, loaded = run_cli(*args)
    assert proc.returncode == 0, proc.stderr
    if verb[0] == "inspect":
        assert "token_embd.weight" in proc.stdout and "layering-test" in proc.stdout
    if verb[0] == "presets":
        assert "1.3b" in proc.stdout
    assert "torch" not in loaded


def test_a_verb_that_trains_does_load_torch(tmp_path: Path) -> None:
    """The check above can fail: a verb that needs the model does import torch (here: a bad checkpoint)."""
    proc, loaded = run_cli("generate", str(tmp_path / "missing.pt"), "--prompt", "hi")
    assert proc.returncode == 2 and "torch" in loaded
