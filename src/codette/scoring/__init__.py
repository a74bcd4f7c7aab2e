"""The scorers of text: does a reply say true things about Codette (:mod:`.identity`), speak in the
asked perspective (:mod:`.perspective`), carry a tool result's key facts (:mod:`.tool_facts`), and
how sure is a rate measured on a few probes (:mod:`.stats`).

Why a room of their own: the evaluation, the agent (each reply's measures) and ``codette report``
all score text the same way, and none of them may import another for it. Scoring reads only the
standard library and the neutral modules (the persona, the tool table, the error type): it loads
no torch, no backend and no tool.
"""
