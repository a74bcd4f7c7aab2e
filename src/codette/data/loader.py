"""Deterministic batches from a packed split.

The data position is one integer, the number of sequences consumed so far; the sequence at
position ``i`` is a pure function of (seed, i), so a resumed run reads exactly what the
uninterrupted run would have read.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from codette.data.pack import PackedSplit
from codette.errors import CodetteError

IGNORE_INDEX = -100
log = logging.getLogger(__name__)


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
    pieces = np.maximum((ends - starts + seq_len - 1) // seq_len, 1)
    out = np.repeat(starts, pieces) + seq_len * (np.arange(int(pieces.sum())) - np.repeat(np.cumsum(pieces) - pieces, pieces))
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
