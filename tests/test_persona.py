"""The persona (`codette.persona`): who the model is, and the checker that finds an answer contradicting it."""

from __future__ import annotations

from codette.persona import identity_contradictions


def test_identity_checker_flags_contradictions() -> None:
    assert not identity_contradictions("<consciousness> I am Codette, with eleven perspectives and 11 tools.")
    assert identity_contradictions("I am ChatGPT.")
    assert identity_contradictions("I am Codette and I have four perspectives.")
    assert identity_contradictions("I am Codette. I remember our last chat and I have feelings.")
