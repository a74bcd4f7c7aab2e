"""The model's control markers (``<consciousness>``, ``<perspective> KEY``) are not shown to people: the
agent removes them from the text it streams and returns, whole or split across stream pieces, and
reports them as metadata; ``raw`` keeps them, and the evaluation still scores the model's own text."""

from __future__ import annotations

import asyncio

import pytest

from codette.agent.loop import LoopConfig, Turn, run_turn
from codette.agent.markup import MarkerFilter, MarkupFilter, strip_markers
from codette.tools import Toolbox
from tests.test_agent import Scripted, agent_for, call  # noqa: F401 - agent_for is a fixture

MIXED = ("<perspective> newton\nForces cause every effect we measure.\n"
         "<perspective> davinci\nSketch the design: its form serves its function.\n"
         "Synthesis: forces and form together.")


@pytest.mark.parametrize(("text", "clean", "markers"), [
    ("<consciousness> As Codette, I help people think.", "As Codette, I help people think.",
     {"consciousness": True, "perspectives": []}),
    (MIXED, "Forces cause every effect we measure.\nSketch the design: its form serves its function.\n"
            "Synthesis: forces and form together.", {"consciousness": False, "perspectives": ["newton", "davinci"]}),
    ("Plain text, <b>html</b> and a <tool_call> mention stay.", "Plain text, <b>html</b> and a <tool_call> mention stay.",
     {"consciousness": False, "perspectives": []}),
    # A word after the marker that is no perspective key stays; so does a key's longer relative.
    ("<perspective> The answer is 4.", "The answer is 4.", {"consciousness": False, "perspectives": []}),
    ("<perspective> newtonian physics", "newtonian physics", {"consciousness": False, "perspectives": []}),
    ("<consciousness> newton was right", "newton was right", {"consciousness": True, "perspectives": []}),
    ("Ends with a marker <perspective> symbolic", "Ends with a marker ", {"consciousness": False,
                                                                          "perspectives": ["symbolic"]}),
    ("<tool>Stray token.", "Stray token.", {"consciousness": False, "perspectives": []}),
])
def test_markers_are_removed_whole_and_split_across_pieces(text, clean, markers):
    assert strip_markers(text) == (clean, markers)
    for size in (1, 2, 3, 4, 7, 13):  # every split of every marker, the key and the blanks after it
        f = MarkerFilter()
        streamed = [f.feed(text[i:i + size]) for i in range(0, len(text), size)] + [f.flush()]
        assert ("".join(streamed), f.markers()) == (clean, markers), size
        assert not any("<consc" in piece or "<persp" in piece for piece in streamed)


def test_a_marker_prefix_is_held_back_until_the_next_piece_decides():
    f = MarkerFilter()
    assert f.feed("Hello <persp") == "Hello "  # could be a marker: held
    assert f.feed("ective> new") == ""  # a marker, and "new" may grow into a key: still held
    assert f.feed("ton\nForces.") == "Forces."
    assert f.feed(" <b") == " <b"  # cannot start a marker: passed on at once
    assert f.flush() == "" and f.markers()["perspectives"] == ["newton"]


def test_the_agent_streams_and_returns_clean_text_and_the_markers_as_metadata(agent_for):
    agent, backend = agent_for(["<consciousness> I am Codette.", MIXED, "<consciousness> I am Codette."], tools=[])
    events = list(agent.iter_events("Who are you?"))
    shown = "".join(e.data["text"] for e in events if e.type == "text")  # Scripted streams 3-character pieces
    r = events[-1].data["response"]
    assert shown == r.text == "I am Codette." and r.markers == {"consciousness": True, "perspectives": []}
    assert r.messages[-1] == {"role": "assistant", "content": "<consciousness> I am Codette."}  # for the model
    assert r.metrics["consciousness_marker"] is True  # measured on the model's own text
    mixed = agent.respond("How does a bridge stand?", perspectives=["newton", "davinci"], history=r.messages)
    assert "<perspective>" not in mixed.text and mixed.markers["perspectives"] == ["newton", "davinci"]
    assert [p["perspective"] for p in mixed.perspectives["parts"]] == ["newton", "davinci"]
    assert mixed.metrics["perspective_marker_accuracy"] == 1.0
    raw = asyncio.run(agent.generate_response("Who are you?", raw=True))
    assert raw.text == "<consciousness> I am Codette." and raw.markers["consciousness"]


def test_markers_around_a_tool_call_are_hidden_in_every_round(agent_for):
    agent, _ = agent_for(["<consciousness> Let me compute.\n" + call("calculator", expression="6 * 7"),
                          "<perspective> mathematical\n6 * 7 = 42."], tools=["calculator"])
    events = list(agent.iter_events("What is 6 * 7?"))
    shown = "".join(e.data["text"] for e in events if e.type == "text")
    assert shown == "Let me compute.\n6 * 7 = 42." and events[-1].data["response"].text == "6 * 7 = 42."


def test_the_loop_keeps_the_markers_for_the_evaluation(tmp_path):
    """run_turn's callers that score the model (natural set, showcase) get its own text by default."""
    turn = Turn([], [], [{"role": "user", "content": "Who are you?"}], [], [], "Who are you?", [])
    with Toolbox(tmp_path, enabled=[]) as toolbox:
        events = list(run_turn(Scripted(["<consciousness> I am Codette."]), toolbox, turn, LoopConfig()))
    assert events[-1].data["response"].text == "<consciousness> I am Codette."
    assert "".join(e.data["text"] for e in events if e.type == "text") == "<consciousness> I am Codette."


def test_both_filters_together_hide_calls_and_markers():
    text = "<consciousness> Sure. " + call("calculator", expression="1+1") + " Done."
    for size in (1, 3, 8):
        calls, marks = MarkupFilter(), MarkerFilter()
        shown = "".join(marks.feed(calls.feed(text[i:i + size])) for i in range(0, len(text), size))
        shown += marks.feed(calls.flush()) + marks.flush()
        assert shown == "Sure.  Done."
