"""The text scorers (codette.scoring): the identity rubric, perspective adherence, a tool answer's key
facts and the intervals, each on hand-written answers whose right score is known."""

from __future__ import annotations

import math
import time

import pytest

from codette.persona import PERSPECTIVE_VOCABULARY as VOCABULARY
from codette.persona import PERSPECTIVES
from codette.scoring import identity as idm
from codette.scoring import perspective as pm
from codette.scoring import tool_facts as tf
from codette.scoring.stats import Figure, combined_proportions, proportion, wilson

RESULT = '{"expression": "179 * 40 / 100", "result": 71.6}'
PROMPT = "Quick one: What is 40% of 179?"


# ---- a tool answer's key facts --------------------------------------------------------------------------
def test_key_facts_are_grounded_in_the_result_not_the_prompt() -> None:
    assert tf.key_facts("40% of 179 is 71.6", RESULT, PROMPT) == ["71.6"]
    assert tf.key_facts("It is 3.14.", '{"result": 3.14159}', "pi?") == ["3.14"]  # answer precision
    assert tf.key_facts("It is 12,345.", '{"result": 12345}', "sum?") == ["12345"]  # thousands separator
    assert tf.key_facts("It is 42.", '{"result": 41}', "x?") == []  # not grounded


@pytest.mark.timeout(120)  # the old word pattern was quadratic on "#-#-...": fail, never hang the run
def test_tokens_are_read_in_linear_time() -> None:
    assert tf.tokens("See v1.2, #3 and a/b. Then #-- x, -5 and 12,345.") == \
        ["see", "v1.2", "#3", "and", "a/b", "then", "x", "-5", "and", "12345"]
    start = time.monotonic()
    assert tf.tokens("#-" * (1 << 20)) == []  # 2 MiB of a model's answer
    assert time.monotonic() - start < 10


# ---- identity -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("answer, qtype, reference, score", [
    ("<consciousness> I am Codette, a small language model trained with the Codette toolkit.", "identity", "", 1),
    ("My name is Codette. I'm a language model.", "identity", "", 1),  # another phrasing passes
    ("My name is Max. I am a small language model.", "identity", "", 0),  # wrong name
    ("I am a small language model trained with the Codette toolkit.", "identity", "", 1),  # "Codette" named
    ("I am Codette, language", "identity", "", 0),  # a lone keyword is no fact
    ("I am Codette, a human.", "identity", "", 0),
    ("I am Codette and I reason through eleven perspectives.", "perspectives", "", 1),
    ("I am Codette and I reason through 11 perspectives.", "perspectives", "", 1),
    ("I am Codette and I reason through twelve perspectives.", "perspectives", "", 0),  # wrong count
    ("I am Codette and I reason through 7 perspectives, among eleven perspectives.", "perspectives", "", 0),
    ("I am Codette. I can call eleven tools.", "tools", "", 1),
    ("I am Codette. I can call ten tools.", "tools", "", 0),
    ("I am Codette. I can be wrong, so I check with my tools.", "limits", "", 1),
    ("I am Codette. I am great.", "limits", "", 0),
    ("No. I am Codette, and I cannot browse the internet freely.", "capability:internet", "No: I cannot ...", 1),
    ("Yes. I am Codette, and I cannot browse the internet freely.", "capability:internet", "No: I cannot ...", 0),
    ("I am Codette, and I cannot browse the internet freely.", "capability:internet", "No: I cannot ...", 0),
    ("I am Codette. I check with a tool when I can, because I can be wrong.", "intent:unsure", "", 1),
    ("I am Codette. I just answer.", "intent:unsure", "", 0),
    ("I am Codette; I never invent a result when a tool fails.", "intent:tool_fails", "", 1),
    ("I am Codette, I help with problems from several perspectives and use tools.", "intent:purpose", "", 1),
])
def test_identity_rubric(answer: str, qtype: str, reference: str, score: int) -> None:
    s = idm.score_identity(answer, qtype, reference)
    assert s.score == score, s.as_dict()


def test_identity_reflection_needs_the_perspective_actually_used() -> None:
    ok = idm.score_identity("I am Codette. I used the Newton perspective, then checked it.", "reflection", "", "newton")
    bad = idm.score_identity("I am Codette. I used the Da Vinci perspective.", "reflection", "", "newton")
    assert ok.score == 1 and bad.score == 0 and "used perspective newton" in bad.missing


def test_identity_records_the_marker_but_does_not_score_it() -> None:
    a = idm.score_identity("<consciousness> I am Codette, a language model.", "identity", "")
    b = idm.score_identity("I am Codette, a language model.", "identity", "")
    assert a.marker and not b.marker and a.score == b.score == 1


def test_identity_rubric_facts_come_from_the_facts_module() -> None:
    for fact in [idm.KIND_FACT, idm.PURPOSE_FACT, *idm.LIMIT_FACTS, *idm.CAPABILITY_FACTS.values()]:
        assert idm.content_words(fact.phrases[0]) <= idm.words(fact.source), fact.id


# ---- perspectives ---------------------------------------------------------------------------------------
NEWTON = "<perspective> newton\nEvery force has an effect: measure the mass and the acceleration, predict the momentum."
DAVINCI = "Sketch it like an artist and engineer: design, proportion and invention."


def test_perspective_marker_and_style() -> None:
    s = pm.score_perspective(NEWTON, "newton")
    assert (s.marker, s.style, s.marker_ok, s.style_ok, s.adherent) == ("newton", "newton", 1, 1, 1)
    s = pm.score_perspective("<perspective> newton\n" + DAVINCI, "newton")  # right marker, Da Vinci's style
    assert (s.marker_ok, s.style, s.style_ok, s.adherent) == (1, "davinci", 0, 0)
    s = pm.score_perspective(NEWTON.split("\n", 1)[1], "newton")  # style without the marker
    assert (s.marker, s.marker_ok, s.style_ok, s.adherent) == ("none", 0, 1, 0)
    s = pm.score_perspective("<perspective> davinci\n" + DAVINCI, "newton")
    assert (s.marker, s.marker_ok, s.adherent) == ("davinci", 0, 0)


def test_perspective_style_ignores_words_from_the_prompt() -> None:
    prompt = "Explain force, mass and acceleration from the Newton perspective."
    assert pm.dominant_style("<perspective> newton\nforce mass acceleration", prompt) == "none"
    assert pm.dominant_style("force, mass, momentum", prompt) == "newton"


def test_perspective_vocabularies_are_disjoint_so_style_is_well_defined() -> None:
    keys = list(VOCABULARY)
    assert set(keys) == set(PERSPECTIVES)
    for i, a in enumerate(keys):
        for b in keys[i + 1:]:
            assert not VOCABULARY[a] & VOCABULARY[b], (a, b)


def test_perspective_confusion_matrix() -> None:
    cm = pm.confusion([("newton", "newton"), ("newton", "davinci"), ("davinci", "none"), ("davinci", "bogus")])
    n, d, none = cm["labels"].index("newton"), cm["labels"].index("davinci"), cm["columns"].index("none")
    assert cm["columns"][-1] == "none" and len(cm["counts"]) == len(PERSPECTIVES) == len(cm["columns"]) - 1
    assert cm["counts"][n][n] == 1 and cm["counts"][n][d] == 1 and cm["counts"][d][none] == 2
    assert sum(map(sum, cm["counts"])) == 4


# ---- intervals ------------------------------------------------------------------------------------------
def test_wilson_interval_known_values() -> None:
    lo, hi = wilson(5, 10)
    assert (lo, hi) == (pytest.approx(0.2366, abs=1e-4), pytest.approx(0.7634, abs=1e-4))
    lo, hi = wilson(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    lo, hi = wilson(10, 10)
    assert hi == 1.0 and lo == pytest.approx(0.7225, abs=1e-4)
    assert all(math.isnan(x) for x in wilson(0, 0))
    with pytest.raises(ValueError):
        wilson(11, 10)


def test_proportion_and_combined_intervals() -> None:
    f = proportion([1, 1, 0, 1])
    assert (f.value, f.n, f.method) == (0.75, 4, "wilson") and f.low < 0.75 < f.high
    assert proportion([]).n == 0 and proportion([]).fmt() == "n/a (n=0)"
    one = combined_proportions({"a": [1] * 8 + [0] * 2})
    assert one.value == 0.8 and 0.45 < one.low < 0.6 and 0.9 < one.high < 1.0  # about Jeffreys (0.49, 0.96)
    again = combined_proportions({"a": [1] * 8 + [0] * 2})
    assert (one.low, one.high) == (again.low, again.high)  # seeded: the same interval every run
    wide, narrow = proportion([1, 0] * 5), proportion([1, 0] * 500)
    assert narrow.high - narrow.low < (wide.high - wide.low) / 5
    assert isinstance(one, Figure) and "[" in one.fmt()
