"""Evaluation: the runners that measure a model. One job a file:

=================  ==================================================================================
``lm.py``          held-out language-modelling metrics (loss, perplexity, bits per byte)
``probes.py``      held-out records -> behavioral probes
``probes_run.py``  the probes through any backend, and their figures
``tool_metric.py`` the tool-use ladder (the tools' own call parser and JSON schemas)
``natural.py``     the hand-written natural-prompt set (``natural_set.yaml``) and its scorer
``natural_run.py`` the natural set through the agent's tool loop
``showcase.py``    the sample chats, through the agent's tool loop
``run.py``         ``codette eval``
``summary.py``     ``eval.md`` and the console tables
``training.py``    the probes during training
``copying.py``     the copy monitor during training: the request's values in tool calls, teacher-forced
=================  ==================================================================================

The text scorers these share with the agent and ``codette report`` are :mod:`codette.scoring`.
Names are imported on first use (:mod:`codette.lazy`): the CLI reads the default probe count at
start-up without loading torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from codette.lazy import lazy_exports

if TYPE_CHECKING:
    from codette.evaluate.lm import LMMetrics, evaluate_lm

__all__ = ["LMMetrics", "evaluate_lm"]

__getattr__, __dir__ = lazy_exports(__name__, dict.fromkeys(__all__, "codette.evaluate.lm"))
