"""The parity suites' runtime guard: a missing runtime fails under make test / CI, and only skips elsewhere."""

from __future__ import annotations

import pytest

from tests import _runtimes


@pytest.mark.parametrize("var", ["CODETTE_REQUIRE_RUNTIMES", "CI"])
def test_missing_runtime_fails_when_required(monkeypatch: pytest.MonkeyPatch, var: str) -> None:
    monkeypatch.delenv("CODETTE_REQUIRE_RUNTIMES", raising=False)
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv(var, "true")
    with pytest.raises(pytest.fail.Exception, match="parity runtime missing: codette_no_such_runtime"):
        _runtimes.require("codette_no_such_runtime")


def test_missing_runtime_skips_only_in_adhoc_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CODETTE_REQUIRE_RUNTIMES", raising=False)
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception, match="codette_no_such_runtime is not installed"):
        _runtimes.require("codette_no_such_runtime")


def test_make_test_requires_runtimes() -> None:
    """The Makefile's test target sets the variable, so `make test` can never pass with a parity suite skipped."""
    from pathlib import Path

    makefile = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    test_recipe = makefile.split("\ntest:", 1)[1].split("\n\n", 1)[0]
    assert "CODETTE_REQUIRE_RUNTIMES=1" in test_recipe and "pytest" in test_recipe

