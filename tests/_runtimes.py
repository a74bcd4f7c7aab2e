"""The real runtimes the parity suites check our files against (llama.cpp, transformers).

A parity suite must never be skipped silently: under ``make test`` (which sets
``CODETTE_REQUIRE_RUNTIMES=1``) and in CI (``CI=true``) a missing runtime fails the run. Only a
developer's ad-hoc ``pytest`` without those variables skips, and says why.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest

FIXES = {
    "llama_cpp": "run `make test` (it builds llama-cpp-python portably), or see docs/DEPLOYMENT.md",
    "transformers": "pip install -e '.[dev]'",
    "peft": "pip install -e '.[dev]' (or '.[lora]')",
}


def required() -> bool:
    """True when a missing runtime must fail the suite instead of skipping it."""
    flags = (os.environ.get("CODETTE_REQUIRE_RUNTIMES", ""), os.environ.get("CI", ""))
    return any(f.strip().lower() not in ("", "0", "false", "no") for f in flags)


def require(name: str) -> ModuleType:
    """Import runtime ``name``; fail (make test, CI) or skip (ad-hoc runs) when it is missing."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        msg = f"{name} is not installed ({exc}); {FIXES.get(name, 'install it')}"
        if required():
            pytest.fail(f"parity runtime missing: {msg}", pytrace=False)
        pytest.skip(msg, allow_module_level=True)
