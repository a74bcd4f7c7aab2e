"""Tool conversations: the user asks, Codette calls a tool, the real result comes back, Codette answers.

Each scenario builds a small workspace *setup* (files, a CSV table, an image, a server clock), a
tool call that validates against the tool's schema, runs it for real through
:class:`~codette.data.curriculum.toolrun.ToolRunner`, and writes the answer from the parsed result,
so the answer always agrees with what the tool said. Some calls fail (missing file, bad column,
code that raises, a host that is not allowed...) and the answer explains what went wrong; some
questions need no tool at all. How often each kind occurs is ``data.tool_mix``
(:class:`codette.config.ToolMixConfig`).

* :mod:`.names`: word lists and the file, folder and table names requests use;
* :mod:`.base`: a scenario, the messages, one- and several-call samples;
* :mod:`.lists`: which tool list a conversation shows;
* one module per scenario family: :mod:`.files`, :mod:`.python`, :mod:`.arithmetic`, :mod:`.tables`,
  :mod:`.knowledge`, :mod:`.web`, :mod:`.images`, gathered by tool in :mod:`.scenarios`;
* :mod:`.no_tool`, :mod:`.chains` (two calls), :mod:`.drills` (several requests in a row);
* :mod:`.dispatch`: which kind of conversation to make, and making it.

Records carry ``tool`` (name or None), ``tool_arguments``, ``expected_result`` (the tool message
content), ``tool_ok``, ``setup`` and ``scenario`` in addition to the messages.
"""
