"""Evaluation: language-modelling metrics on held-out data and the behavioral probes.

Names are imported on first use (:mod:`codette.lazy`): a reader of one scorer or of the interval
statistics does not load torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from codette.lazy import lazy_exports

if TYPE_CHECKING:
    from codette.evaluate.lm import LMMetrics, evaluate_lm

__all__ = ["LMMetrics", "evaluate_lm"]

__getattr__, __dir__ = lazy_exports(__name__, dict.fromkeys(__all__, "codette.evaluate.lm"))
