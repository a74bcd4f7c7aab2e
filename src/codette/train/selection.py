"""Best-checkpoint selection by a configured metric (``train.best_metric``).

Why a separate object: the training loop only asks "is this evaluation the best so far?" and stores
``state()`` in the checkpoint so a resumed run keeps comparing against the same best. Val loss is
the default because it is measured on every evaluation over thousands of tokens; a behavioral
metric can be chosen, but it comes from a small probe subset (see its n in the metrics log), so
differences within its 95% interval are noise.
"""

from __future__ import annotations

import math
from typing import Any

from codette.errors import CodetteError

# Names as they appear in a training evaluation record.
LM_METRICS = {"val_loss": "min", "perplexity": "min", "token_accuracy": "max"}
BEHAVIOR_METRICS = (
    "tool_json_valid", "tool_right_tool", "tool_args_valid", "tool_result_match", "tool_task_success", "tool_abstain",
    "identity_score", "self_reference_score", "intentionality_score", "consciousness_score",
    "perspective_marker_accuracy", "perspective_style_accuracy", "perspective_adherence", "behavior_score",
)


def direction(metric: str) -> str:
    """'min' or 'max'; a CodetteError naming ``train.best_metric`` for an unknown metric."""
    if metric in LM_METRICS:
        return LM_METRICS[metric]
    if metric in BEHAVIOR_METRICS:
        return "max"
    raise CodetteError(f"config key 'train.best_metric': unknown metric {metric!r}; choose one of "
                       f"{', '.join([*LM_METRICS, *BEHAVIOR_METRICS])}")


def needs_probes(metric: str) -> bool:
    """Whether selecting by ``metric`` needs the behavioral probes (a CodetteError for an unknown metric)."""
    direction(metric)
    return metric in BEHAVIOR_METRICS


class BestTracker:
    """Remembers the best value of one metric; :meth:`update` says whether an evaluation beats it."""

    def __init__(self, metric: str, saved: dict | None = None, saved_val_loss: float | None = None) -> None:
        self.metric = metric
        self.sign = 1.0 if direction(metric) == "min" else -1.0
        self.best = math.inf
        if saved and saved.get("name") == metric and saved.get("value") is not None:
            self.best = self.sign * float(saved["value"])
        elif metric == "val_loss" and saved_val_loss is not None:  # checkpoints from before best_metric existed
            self.best = float(saved_val_loss)

    def update(self, record: dict[str, Any]) -> bool:
        """True when ``record[metric]`` is strictly better than every earlier one (missing/NaN never is)."""
        value = record.get(self.metric)
        if value is None or not isinstance(value, (int, float)) or math.isnan(value):
            return False
        if self.sign * value < self.best:
            self.best = self.sign * value
            return True
        return False

    def state(self) -> dict:
        return {"name": self.metric, "value": None if math.isinf(self.best) else self.sign * self.best}
