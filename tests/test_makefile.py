"""The Makefile's targets, read as `make -n` plans them (nothing is built or run)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


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


def test_make_test_fast_skips_the_slow_tests_and_make_test_runs_them_all(tmp_path: Path) -> None:
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    venv = tmp_path / "venv"
    plans = {target: subprocess.run([make, "-n", target, f"VENV={venv}"], cwd=ROOT, capture_output=True, text=True,
                                    check=True).stdout for target in ("test", "test-fast")}
    fast = [line for line in plans["test-fast"].splitlines() if "-m pytest" in line]
    full = [line for line in plans["test"].splitlines() if "-m pytest" in line]
    assert len(fast) == 1 and "-m 'not slow'" in fast[0]
    assert len(full) == 1 and " -m " not in full[0].split("-m pytest", 1)[1]
