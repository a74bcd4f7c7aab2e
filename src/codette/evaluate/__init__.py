"""Evaluation: language-modelling metrics on held-out data (behavioral probes build on this)."""

from codette.evaluate.lm import LMMetrics, evaluate_lm

__all__ = ["LMMetrics", "evaluate_lm"]
