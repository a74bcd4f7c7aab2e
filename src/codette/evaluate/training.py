"""What the training loop calls besides its own loss: the copy monitor, behavioral probes on a budget, TensorBoard.

The loop stays small: it hands one optional :class:`TrainingMonitor` every metrics record
(:meth:`~TrainingMonitor.on_record`) and, at each evaluation, asks it for extra figures
(:meth:`~TrainingMonitor.on_eval`). All logic lives here.

Budget: the probes may cost at most ``budget`` (default 10%) of the training time spent so far.
Before each probe the monitor checks that the time already spent on probes plus the expected cost
of the next one (the mean of earlier probes of its kind) stays within ``budget x training seconds``;
the allowance is cumulative, so an evaluation that ran over is paid back at the next. Probes run in
a fixed order interleaving the kinds, so an evaluation with a smaller allowance scores a prefix of
the same probes, and each logged figure carries its own n (``<metric>_n``).

The copy monitor (:mod:`codette.evaluate.copying`, ``train.copy_monitor`` records) runs first at each
evaluation, outside the probe budget: one teacher-forced forward pass a record, a few percent of an
evaluation.

Neither may change training: the RNG states (torch, CUDA, Python) are saved and restored, the model is
put back in training mode, decoding is greedy and the copy monitor only reads the model under no_grad in
eval mode (no random numbers drawn).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from pathlib import Path
from typing import Any

import torch

from codette.backends.base import SamplingConfig
from codette.backends.local import LocalBackend
from codette.evaluate.copying import CopyMonitor
from codette.evaluate.probes import KINDS, Probe
from codette.evaluate.probes_run import ToolWorkspace, run_probe, summarize
from codette.rng import rng_state, set_rng_state
from codette.tokenizer import CodetteTokenizer

log = logging.getLogger(__name__)


def interleave(probes: list[Probe]) -> list[Probe]:
    """tool, no_tool, identity, perspective, tool, ...: any prefix covers every kind evenly."""
    by_kind = {k: [p for p in probes if p.kind == k] for k in KINDS}
    out: list[Probe] = []
    for i in range(max((len(v) for v in by_kind.values()), default=0)):
        out += [v[i] for v in by_kind.values() if i < len(v)]
    return out


class TrainingMonitor:
    """The copy figures and behavioral probes (within a time budget) at each evaluation, and optional
    TensorBoard events."""

    def __init__(self, tokenizer: CodetteTokenizer | None = None, probes: list[Probe] | None = None,
                 budget: float = 0.10, max_new_tokens: int = 96, tensorboard_dir: Path | None = None,
                 copy: CopyMonitor | None = None) -> None:
        self.tokenizer = tokenizer
        self.probes = interleave(list(probes or []))
        self.budget = budget
        self.sampling = SamplingConfig(max_new_tokens=max_new_tokens, temperature=0.0)
        self.spent = 0.0  # seconds on probes, all evaluations together
        self.train_seconds = 0.0
        self.cost: dict[str, list[float]] = {}
        self.tensorboard_dir = tensorboard_dir
        self._writer: Any = None
        self.copy = copy

    # ---- behavioral probes ------------------------------------------------------------------------------
    @property
    def overhead(self) -> float:
        """Probe seconds / training seconds so far (the budget caps it near ``budget``)."""
        return self.spent / self.train_seconds if self.train_seconds > 0 else 0.0

    def _expected(self, kind: str) -> float:
        seen = self.cost.get(kind)
        return sum(seen) / len(seen) if seen else 0.0

    def on_eval(self, model: torch.nn.Module, step: int, train_seconds: float,
                autocast: contextlib.AbstractContextManager | None = None) -> dict[str, Any]:
        """The copy figures (``autocast``: the evaluation's), then as many probes as the budget allows; their
        figures (and ``_n`` counts) for the eval record."""
        self.train_seconds = train_seconds
        copied = self._copy(model, autocast)
        if not self.probes or self.tokenizer is None or self.budget <= 0:
            return copied
        allowance = self.budget * train_seconds - self.spent
        saved_rng = rng_state()
        was_training = model.training
        backend = LocalBackend(model, self.tokenizer, step)
        runner = ToolWorkspace()
        results: list[dict] = []
        t0 = time.perf_counter()
        try:
            for p in self.probes:
                if time.perf_counter() - t0 + self._expected(p.kind) > allowance:
                    break
                r = run_probe(backend, p, self.sampling, runner)
                self.cost.setdefault(p.kind, []).append(r["seconds"])
                results.append(r)
        finally:
            runner.close()
            model.train(was_training)
            set_rng_state(saved_rng)
        dt = time.perf_counter() - t0
        self.spent += dt
        out: dict[str, Any] = {**copied, "probe_n": len(results), "probe_seconds": dt, "probe_overhead": self.overhead}
        if results:
            for name, fig in summarize(results)["figures"].items():
                if fig["n"] and not math.isnan(fig["value"]):
                    out[name] = fig["value"]
                    out[f"{name}_n"] = fig["n"]
        log.info("step %d behavioral probes: %d in %.1f s (overhead so far %.1f%% of training time)", step,
                 len(results), dt, 100 * self.overhead)
        return out

    def _copy(self, model: torch.nn.Module, autocast: contextlib.AbstractContextManager | None) -> dict[str, Any]:
        """The copy monitor's figures (none without one; the loop's eval line shows them), RNG states kept."""
        if self.copy is None:
            return {}
        saved_rng = rng_state()
        try:
            return self.copy(model, autocast)
        finally:
            set_rng_state(saved_rng)

    # ---- TensorBoard -----------------------------------------------------------------------------------
    def on_record(self, record: dict[str, Any]) -> None:
        """Every metrics record; written to TensorBoard when a folder was given."""
        if self.tensorboard_dir is None:
            return
        from codette.tensorboard import open_writer, scalars_of

        if self._writer is None:
            self._writer = open_writer(self.tensorboard_dir)
        for tag, value, step in scalars_of(record):
            self._writer.add_scalar(tag, value, step)
        if record.get("kind") == "eval":
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def build_monitor(train_cfg: Any, data_dir: Path, tokenizer: CodetteTokenizer, log_dir: Path,
                  required: bool = False) -> TrainingMonitor | None:
    """The monitor ``train.probes``, ``train.copy_monitor`` and ``train.tensorboard`` ask for (None: nothing to
    do). ``required``: ``train.best_metric`` is a behavioral metric (the trainer's ``needs_probes``), so no
    probes is an error."""
    from codette.errors import CodetteError
    from codette.evaluate.probes import probe_set

    probes: list[Probe] = []
    if train_cfg.probes > 0:
        try:
            probes, _ = probe_set(data_dir, per_kind=train_cfg.probes, split="val")  # may select: never test
        except CodetteError as exc:
            if required:
                raise
            log.warning("no behavioral probes during training: %s", exc)
    if required and (not probes or train_cfg.probe_budget <= 0):
        raise CodetteError(f"config key 'train.best_metric' is {train_cfg.best_metric!r}, a behavioral metric, but "
                           f"'train.probes' is {train_cfg.probes} and 'train.probe_budget' {train_cfg.probe_budget}; "
                           f"enable the probes or select by val_loss")
    tb = Path(log_dir) / "tensorboard" / time.strftime("%Y%m%d-%H%M%S") if train_cfg.tensorboard else None
    copy = CopyMonitor(tokenizer, data_dir, train_cfg.copy_monitor, train_cfg.seq_len) \
        if train_cfg.copy_monitor > 0 else None
    if not probes and tb is None and copy is None:
        return None
    return TrainingMonitor(tokenizer, probes, train_cfg.probe_budget, tensorboard_dir=tb, copy=copy)
