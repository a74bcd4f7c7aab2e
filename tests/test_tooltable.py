"""The tool table (codette.tooltable) and every view derived from it agree.

The catalogue of tools used to be written four times (the persona's list and compact schemas, the
Toolbox's names and full schemas, the curriculum's rewordings and purposes); now it is one table and
these tests tie each reader's view back to it.
"""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest

from codette.persona import IDENTITY, identity_contradictions
from codette.tooltable import DEFAULT_TOOLS, SPECS, TOOL_NAMES, tool_schema


def test_the_table_has_the_eleven_tools_of_the_spec() -> None:
    """PHASE_4_INDEX.md: "Tool-calling system (11 tools available)", tools for "file, code, web, analysis, API"."""
    assert len(TOOL_NAMES) == len(set(TOOL_NAMES)) == 11
    assert all(name == spec.name for name, spec in SPECS.items())
    for kind in (("read_file", "write_file", "list_directory", "search_files"), ("execute_python",),
                 ("web_search",), ("analyze_data", "analyze_image", "calculator"), ("http_request",),
                 ("query_knowledge_base",)):
        assert set(kind) <= set(TOOL_NAMES), kind
    # The persona's facts count the same tools.
    assert "eleven tools" in IDENTITY["tools"] and not identity_contradictions(f"I have {len(TOOL_NAMES)} tools")


def test_only_execute_python_is_off_by_default() -> None:
    """It runs code the model wrote: the agent and the Toolbox offer it only when switched on."""
    assert [n for n in TOOL_NAMES if n not in DEFAULT_TOOLS] == ["execute_python"]
    assert list(DEFAULT_TOOLS) == [n for n in TOOL_NAMES if SPECS[n].default]


@pytest.mark.parametrize("name", TOOL_NAMES)
def test_the_compact_form_is_a_subset_of_the_full_schema(name: str) -> None:
    """A call that satisfies what the model is shown can satisfy the Toolbox: same parameter names and types."""
    spec = SPECS[name]
    full = spec.parameters["properties"]
    for param, json_type in spec.compact_parameters.items():
        assert full[param]["type"] == json_type, (name, param)
    assert set(spec.compact_required) == set(spec.parameters["required"]), name
    jsonschema.Draft202012Validator.check_schema(spec.parameters)
    jsonschema.Draft202012Validator.check_schema(tool_schema(name, required=True)["function"]["parameters"])
    assert spec.purpose and spec.description and spec.compact_description
    assert spec.rewordings and spec.compact_description not in spec.rewordings


def test_the_toolbox_serves_the_table(tmp_path: Path) -> None:
    from codette.tools import Toolbox

    with Toolbox(tmp_path / "ws") as default, Toolbox(tmp_path / "all", enabled=TOOL_NAMES) as every:
        assert default.names() == list(DEFAULT_TOOLS)
        assert [s["function"] for s in every.schemas()] == [
            {"name": n, "description": SPECS[n].description, "parameters": SPECS[n].parameters} for n in TOOL_NAMES]


def test_the_agent_offers_the_table_s_default_tools() -> None:
    from codette.agent.core import TOOL_PRIORITY, default_tools

    assert default_tools() == list(DEFAULT_TOOLS)
    assert default_tools(enable_python=True) == list(TOOL_NAMES)
    assert sorted(TOOL_PRIORITY) == sorted(TOOL_NAMES)  # every tool has a place when the context is short


def test_the_curriculum_has_a_scenario_for_every_tool_in_the_table_s_order() -> None:
    from codette.data.curriculum.tools.drills import DRILL_TOOLS
    from codette.data.curriculum.tools.scenarios import SCENARIOS

    assert tuple(SCENARIOS) == TOOL_NAMES
    assert set(DRILL_TOOLS) <= set(TOOL_NAMES)


def test_other_per_tool_lists_name_the_table_s_tools() -> None:
    """Lists keyed by tool that are not the table's to hold (the knowledge base's entries), and the
    tools that change files, which the table marks (an agent in a user's folder asks before them)."""
    from codette.tooltable import CHANGES_FILES
    from codette.tools.knowledge import TOOL_FACTS

    assert tuple(TOOL_FACTS) == TOOL_NAMES
    assert CHANGES_FILES == {"write_file", "execute_python"}
