"""Deterministic batches from a packed split.

The data position is one integer, the number of sequences consumed so far; the sequence at
position ``i`` is a pure function of (seed, i), so a resumed run reads exactly what the
uninterrupted run would have read.

Two ways to cut training windows (``train.packing``): ``stream`` (:class:`BatchSampler`: a window of the
token stream starts at every document, so its tail runs into the documents after it and a token is read
several times an epoch) and ``bestfit`` (:class:`BestFitSampler`: whole documents packed into windows,
every token read once an epoch).
"""

from __future__ import annotations

import bisect
import logging
from dataclasses import dataclass

import numpy as np
import torch

from codette.data.pack import PackedSplit
from codette.errors import CodetteError
from codette.tokenizer.chat_template import PAD, SPECIAL_TOKENS

IGNORE_INDEX = -100
PAD_ID = SPECIAL_TOKENS.index(PAD)  # what fills a best-fit window's unused tail (its targets are ignored)
BESTFIT_BUFFER = 1000  # pieces a best-fit window chooses from (nanochat's default buffer for pretraining)
log = logging.getLogger(__name__)


def _every(starts: np.ndarray, count: np.ndarray, step: int) -> np.ndarray:
    """``count[i]`` positions ``step`` apart from each ``starts[i]``, in order."""
    return np.repeat(starts, count) + step * (np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count))


def document_aligned_starts(doc_starts: np.ndarray, n_tokens: int, seq_len: int) -> np.ndarray:
    """Window starts: every document's first token, then every ``seq_len`` tokens inside it.

    A window that starts mid-conversation shows the model an answer without its question, so a
    tool call or a perspective marker is learned without the request that decides it. Starting
    windows where documents start (and cutting only documents longer than a window) keeps every
    decision in context, the way generation sees it. A window's tail may run into the next
    document, as in any packed training. Every token is covered at least once per epoch.
    """
    starts = np.asarray(doc_starts, dtype=np.int64)
    ends = np.append(starts[1:], n_tokens)
    out = _every(starts, np.maximum((ends - starts + seq_len - 1) // seq_len, 1), seq_len)
    last = n_tokens - seq_len - 1  # a window needs seq_len + 1 tokens
    return np.unique(np.minimum(out, last)) if last >= 0 else out[:0]


class BatchSampler:
    """``seq_len+1`` windows in a seeded order that changes every epoch (seed + epoch).

    Three kinds of window, one per use:

    - default (evaluation): non-overlapping windows at multiples of ``seq_len``, each token scored
      once; training visits them in a new permutation each epoch.
    - ``aligned=True`` (chat training): :func:`document_aligned_starts` when the split records where
      its documents start, so a conversation is seen from its first token.
    - ``random_offsets=True`` (plain-text training): windows start anywhere in the token stream, drawn
      uniformly per epoch as nanoGPT does, so a model never sees the same cut of a text twice. An
      epoch has as many windows as the non-overlapping layout.

    The window at data position ``i`` depends only on (seed, i), however the positions are visited:
    that is what makes resume exact and lets processes share out positions without overlap.
    """

    def __init__(self, split: PackedSplit, seq_len: int, seed: int, aligned: bool = False,
                 random_offsets: bool = False) -> None:
        if aligned and random_offsets:
            raise ValueError("a sampler's windows are document-aligned or at random offsets, not both")
        self.split, self.seq_len, self.seed = split, seq_len, seed
        self.random_offsets = random_offsets
        self.n_blocks = split.num_blocks(seq_len)
        if self.n_blocks < 1:
            raise CodetteError(
                f"split {split.name!r} has {len(split)} tokens, fewer than one sequence of {seq_len + 1}; "
                "use more data or a shorter seq_len")
        self.starts: np.ndarray | None = None
        if aligned and split.doc_starts is not None:
            self.starts = document_aligned_starts(split.doc_starts, len(split), seq_len)
            self.n_blocks = len(self.starts)
        elif aligned:
            log.warning("%s has no document starts (packed by an older version); training windows are not "
                        "aligned to conversations. Delete the packed/ folder to re-pack.", split.name)
        self._perm_epoch = -1
        self._perm = np.arange(self.n_blocks)

    def _epoch_order(self, epoch: int) -> np.ndarray:
        """Epoch ``epoch``'s window starts at random offsets, or its permutation of the blocks."""
        if epoch != self._perm_epoch:
            rng = np.random.default_rng(self.seed + epoch)
            if self.random_offsets:  # a start s needs tokens s .. s + seq_len
                self._perm = rng.integers(0, len(self.split) - self.seq_len, size=self.n_blocks)
            else:
                self._perm = rng.permutation(self.n_blocks)
            self._perm_epoch = epoch
        return self._perm

    def _position_start(self, position: int) -> int:
        """The first token of the window at data position ``position``."""
        epoch, offset = divmod(position, self.n_blocks)
        picked = int(self._epoch_order(epoch)[offset])
        return picked if self.random_offsets else self._start(picked)

    def _start(self, block: int) -> int:
        return int(self.starts[block]) if self.starts is not None else block * self.seq_len

    def window(self, block: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets (masked positions set to IGNORE_INDEX) of one block."""
        return self._window_at(self._start(block))

    def _window_at(self, start: int) -> tuple[torch.Tensor, torch.Tensor]:
        t = self.seq_len
        tokens = np.asarray(self.split.tokens[start : start + t + 1], dtype=np.int64)
        mask = np.asarray(self.split.mask[start + 1 : start + t + 1], dtype=bool)
        x = torch.from_numpy(tokens[:-1].copy())
        y = torch.from_numpy(np.where(mask, tokens[1:], IGNORE_INDEX))
        return x, y

    def batch(self, position: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``batch_size`` sequences starting at data position ``position``."""
        pairs = [self._window_at(self._position_start(position + j)) for j in range(batch_size)]
        return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])

    def count_targets(self, position: int, count: int) -> int:
        """How many targets the ``count`` sequences from data position ``position`` hold (read from the mask
        alone): the denominator of a step's token mean, known to every process without communication."""
        t = self.seq_len
        return sum(int(np.count_nonzero(self.split.mask[s + 1 : s + t + 1]))
                   for s in (self._position_start(position + j) for j in range(count)))

    def sequential(self, batch_size: int, max_batches: int | None = None):
        """Every block in order (for evaluation), in batches."""
        blocks = list(range(self.n_blocks))
        if max_batches is not None:
            blocks = blocks[: max_batches * batch_size]
        for i in range(0, len(blocks), batch_size):
            pairs = [self.window(b) for b in blocks[i : i + batch_size]]
            yield torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])


def document_pieces(doc_starts: np.ndarray, n_tokens: int, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """(first token, length) of what best-fit packing places: each document whole when it fits a window's
    ``seq_len + 1`` tokens, else cut into pieces that start every ``seq_len`` tokens from its start.

    A long document is split rather than cropped: cropping would drop its tail, and in a conversation the
    tail is the answer, the tokens it is learned for. Consecutive pieces share one token (the last target
    of one is the first input of the next), so every target of the document is in exactly one piece.
    """
    starts = np.asarray(doc_starts, dtype=np.int64)
    ends = np.append(starts[1:], n_tokens)
    count = np.maximum((ends - starts - 1 + seq_len - 1) // seq_len, 1)  # ceil((length - 1) / seq_len)
    first = _every(starts, count, seq_len)
    return first, np.minimum(np.repeat(ends, count) - first, seq_len + 1)


def best_fit(lengths: np.ndarray, order: np.ndarray, capacity: int,
             buffer: int = BESTFIT_BUFFER) -> tuple[np.ndarray, np.ndarray]:
    """Pieces (indices into ``lengths``, taken in ``order``) packed into windows of ``capacity`` tokens;
    returns the pieces in placement order and each window's bounds in it (window ``w`` holds
    ``placed[bounds[w]:bounds[w + 1]]``).

    As nanochat's BOS-aligned best-fit loader: a window takes the longest of the next ``buffer`` pieces that
    fits the room it has left, again and again; when none fits, the rest is padding (never a cut piece).
    Equal lengths go first come, first served, so the result is a pure function of the order.
    """
    pending: list[tuple[int, int, int]] = []  # (length, -arrival, piece), sorted
    placed: list[int] = []
    bounds = [0]
    arrived = 0
    while pending or arrived < len(order):
        room = capacity  # a new window: its first piece always fits
        while True:
            while len(pending) < buffer and arrived < len(order):  # keep the choice at ``buffer`` pieces
                piece = int(order[arrived])
                bisect.insort(pending, (int(lengths[piece]), -arrived, piece))
                arrived += 1
            i = bisect.bisect_right(pending, (room, 1, 0))  # past every piece no longer than the room
            if i == 0:
                break
            length, _, piece = pending.pop(i - 1)
            placed.append(piece)
            room -= length
        bounds.append(len(placed))
    return np.asarray(placed, dtype=np.int64), np.asarray(bounds, dtype=np.int64)


@dataclass
class _EpochPlan:
    placed: np.ndarray  # piece indices in placement order
    bounds: np.ndarray  # window w holds placed[bounds[w]:bounds[w + 1]]


class BestFitSampler:
    """Training windows that start where a document starts and hold whole documents (``train.packing =
    "bestfit"``), as nanochat's BOS-aligned best-fit loader packs them.

    Each epoch shuffles the pieces (:func:`document_pieces`) with ``seed + epoch`` and packs them with
    :func:`best_fit` into windows of ``seq_len + 1`` tokens (inputs and their shifted targets), so every
    token is read once an epoch and no document that fits a window is split between two. A window's unused
    tail is ``<pad>`` with ignored targets; the first token of each piece is never a target (nothing
    before it in the window predicts it). The model has no document mask: a document attends to the
    documents before it in its window, as in stream packing; padding comes last, so no real token sees
    it. Epochs differ in their window count by a few; the counts are computed epoch by epoch from the
    first, so the window at data position ``i`` is still a pure function of (seed, i) and a resumed run
    reads exactly the uninterrupted run's windows.
    """

    def __init__(self, split: PackedSplit, seq_len: int, seed: int, buffer: int = BESTFIT_BUFFER) -> None:
        if split.doc_starts is None:
            raise CodetteError(f"train.packing='bestfit' needs to know where the documents of split {split.name!r} "
                               "start, which this packed folder (an older version's) does not record; delete it "
                               "to re-pack")
        self.split, self.seq_len, self.seed, self.buffer = split, seq_len, seed, buffer
        self.first, self.lengths = document_pieces(split.doc_starts, len(split), seq_len)
        self._ends = [0]  # _ends[e]: data positions before epoch e (known for the epochs packed so far)
        self._plans: dict[int, _EpochPlan] = {}

    def _plan(self, epoch: int) -> _EpochPlan:
        """Epoch ``epoch``'s windows (the two plans used last are kept: a batch may straddle two epochs)."""
        plan = self._plans.pop(epoch, None)
        if plan is None:
            order = np.random.default_rng(self.seed + epoch).permutation(len(self.lengths))
            plan = _EpochPlan(*best_fit(self.lengths, order, self.seq_len + 1, self.buffer))
        self._plans[epoch] = plan  # the dict's order is the order of use
        while len(self._plans) > 2:
            del self._plans[next(iter(self._plans))]
        return plan

    def windows_in_epoch(self, epoch: int) -> int:
        return len(self._plan(epoch).bounds) - 1

    @property
    def n_blocks(self) -> int:
        """Windows of the first epoch (the others hold as many, give or take a few)."""
        return self.windows_in_epoch(0)

    def padding_fraction(self, epoch: int = 0) -> float:
        """Share of the epoch's window slots (``seq_len + 1`` a window) that are padding."""
        return 1.0 - float(self.lengths.sum()) / (self.windows_in_epoch(epoch) * (self.seq_len + 1))

    def _locate(self, position: int) -> tuple[int, int]:
        """(epoch, window in that epoch) of data position ``position``."""
        while self._ends[-1] <= position:
            self._ends.append(self._ends[-1] + self.windows_in_epoch(len(self._ends) - 1))
        epoch = bisect.bisect_right(self._ends, position) - 1
        return epoch, position - self._ends[epoch]

    def pieces_at(self, position: int) -> list[tuple[int, int]]:
        """(first token, length) of the pieces of the window at data position ``position``, in window order."""
        epoch, window = self._locate(position)
        plan = self._plan(epoch)
        picked = plan.placed[plan.bounds[window]:plan.bounds[window + 1]]
        return [(int(self.first[p]), int(self.lengths[p])) for p in picked]

    def _window(self, position: int) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = np.full(self.seq_len + 1, PAD_ID, dtype=np.int64)
        learn = np.zeros(self.seq_len + 1, dtype=bool)
        at = 0
        for first, length in self.pieces_at(position):
            tokens[at:at + length] = self.split.tokens[first:first + length]
            learn[at + 1:at + length] = self.split.mask[first + 1:first + length]
            at += length
        return torch.from_numpy(tokens[:-1].copy()), torch.from_numpy(np.where(learn[1:], tokens[1:], IGNORE_INDEX))

    def batch(self, position: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``batch_size`` windows starting at data position ``position``."""
        pairs = [self._window(position + j) for j in range(batch_size)]
        return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])

    def count_targets(self, position: int, count: int) -> int:
        """How many targets the ``count`` windows from data position ``position`` hold (from the mask alone)."""
        return sum(int(np.count_nonzero(self.split.mask[first + 1:first + length]))
                   for j in range(count) for first, length in self.pieces_at(position + j))


def reading_plan(sampler: BatchSampler | BestFitSampler, steps: int, sequences_per_step: int) -> dict[str, float]:
    """How often a run of ``steps`` steps reads each token of the train split.

    ``processed_tokens`` = steps x sequences per step (batch x grad_accum x processes) x seq_len: the input
    positions the planned run reads, padding included; ``distinct_tokens`` = the train split's tokens;
    ``processed_to_distinct`` is their ratio. ``epochs`` = windows read / windows of an epoch (the first, for
    best-fit), and ``padding_fraction`` the share of an epoch's window slots that are padding (0 for stream).
    Stream packing reads every token several times an epoch (a window from each document start), best-fit
    once, so at the same ratio best-fit runs more epochs.
    """
    processed = steps * sequences_per_step * sampler.seq_len
    distinct = len(sampler.split)
    windows = sampler.n_blocks
    return {"processed_tokens": processed, "distinct_tokens": distinct,
            "processed_to_distinct": processed / distinct, "windows_per_epoch": windows,
            "epochs": steps * sequences_per_step / windows,
            "padding_fraction": sampler.padding_fraction() if isinstance(sampler, BestFitSampler) else 0.0}
