"""Codette's training curriculum: one module per category of synthetic conversation.

* :mod:`.perspectives`: the eleven perspectives, each in its own style, with computed numbers;
* :mod:`.tools`: real tool calls and results (:mod:`.toolrun` runs them), errors, no-tool questions;
* :mod:`.identity`: who Codette is, its abilities and limits, reflection on its own reasoning;
* :mod:`.mixed`: several perspectives and a synthesis.

:mod:`.styles` holds each perspective's vocabulary for the generator and the evaluation alike.
"""
