"""`codette eval`: held-out language-modelling metrics and behavioral probes of a checkpoint or a GGUF.

Both run on one held-out split, ``test`` unless asked otherwise: the test split is read by nothing
during training or checkpoint selection, so its figures were not tuned on (``val``, which picked
``model_best.pt``, can be asked for to compare). Language modelling runs on the packed split
(``packed/<split>.*``), the behavioral probes come from its conversations (``data/<split>.jsonl``)
through :mod:`codette.evaluate.probes`. The result is one flat JSON object (``eval.json``): ``split``,
the LM metrics (:func:`lm_figures`), every behavioral metric as a top-level number, and ``figures``
with each metric's n and 95% interval. With ``natural=True`` the hand-written natural-prompt set
(:mod:`codette.evaluate.natural`) runs too, through the agent's tool loop, as the ``natural`` section.

Every long stage reports its progress through ``on_progress(stage, done, total)`` (:data:`STAGES`), so
``codette eval`` can show a bar for each instead of minutes of silence.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from codette.backends.base import ChatBackend
from codette.backends.local import LocalBackend
from codette.data.loader import BatchSampler
from codette.data.pack import PackedSplit
from codette.data.split import HELD_OUT
from codette.errors import CodetteError
from codette.evaluate.lm import LMMetrics, LMTally, evaluate_lm, token_byte_lengths
from codette.evaluate.probes import DEFAULT_PROBES_PER_KIND, PerKind, probe_set
from codette.evaluate.probes_run import flat, run_probes, summarize
from codette.evaluate.showcase import SHOWCASE, sample_chats

if TYPE_CHECKING:
    from codette.backends.gguf import GGUFBackend

log = logging.getLogger(__name__)

# ``on_progress(stage, done, total)``: called after each unit of a long stage, ``done`` counted from 1.
OnProgress = Callable[[str, int, int], None]
STAGES = {"lm": "{split} split: LM metrics", "probes": "behavioral probes", "natural": "natural prompts",
          "samples": "sample chats"}


def _per_item(on_progress: OnProgress | None, stage: str) -> Callable[[int, int, dict], None] | None:
    """An ``on_result(i, n, result)`` callback (0-based ``i``) that reports ``stage`` through ``on_progress``."""
    return (lambda i, n, _result: on_progress(stage, i + 1, n)) if on_progress else None


def _counted(batches: Iterator[Any], total: int, on_progress: OnProgress | None) -> Iterator[Any]:
    """``batches`` as they are, with ``lm`` progress reported after each one has been scored."""
    for i, batch in enumerate(batches, 1):
        yield batch
        if on_progress:
            on_progress("lm", i, total)


def lm_figures(m: LMMetrics, split: str) -> dict[str, Any]:
    """The LM metrics as ``eval.json`` keys, with the split they were measured on."""
    return {"split": split, "loss": m.val_loss, "perplexity": m.perplexity, "token_accuracy": m.token_accuracy,
            "target_tokens": m.tokens, "bits_per_byte": m.bits_per_byte, "target_bytes": m.target_bytes}


def _probe_source(explicit: Path | str | None, default: Path, split: str) -> Path | None:
    """The probe folder: the one asked for (must exist), else ``data/`` beside the model when it has the split.

    A model copied away from its data folder still gets its LM metrics; the report says why the
    probes are missing instead of failing the whole evaluation.
    """
    if explicit is not None:
        return Path(explicit)
    if (default / f"{split}.jsonl").is_file():
        return default
    log.warning("no %s: behavioral probes skipped (pass --probe-dir to point at a data folder)",
                default / f"{split}.jsonl")
    return None


def behavior_report(backend: ChatBackend, probe_dir: Path | str, probes_per_kind: PerKind = DEFAULT_PROBES_PER_KIND,
                    max_new_tokens: int = 128, unseen_only: bool = True,
                    on_result: Callable[[int, int, dict], None] | None = None, split: str = "test") -> dict[str, Any]:
    """Run the probes of ``probe_dir/<split>.jsonl`` through ``backend``; figures flattened into the report."""
    probes, info = probe_set(probe_dir, probes_per_kind, unseen_only, split=split)
    log.info("behavioral probes: %d (%s)", len(probes), ", ".join(f"{k} {n}" for k, n in info["by_kind"].items()))
    results = run_probes(backend, probes, max_new_tokens,
                         on_result=(lambda i, r: on_result(i, len(probes), r)) if on_result else None)
    summary = summarize(results)
    return {**flat(summary), "probes": info, "behavior": summary, "probe_results": results}


def _add_behavior(report: dict[str, Any], backend: ChatBackend, model_path: Path, probe_dir: Path | str | None,
                  probes_per_kind: PerKind, max_new_tokens: int, samples: int, on_result: Any, split: str,
                  natural: bool = False, on_natural: Any = None, on_progress: OnProgress | None = None,
                  constrain: bool = True) -> None:
    """The behavioral probes (from ``probe_dir`` or data/ beside the model), the natural-prompt set when asked
    for (its tool calls held while decoding unless ``constrain`` is False), and sample chats, into ``report``.
    ``on_progress`` reports each of them unless ``on_result`` (probes) or ``on_natural`` are given."""
    on_result = on_result or _per_item(on_progress, "probes")
    on_natural = on_natural or _per_item(on_progress, "natural")
    default = model_path.parent / "data"
    source = _probe_source(probe_dir, default, split) if probes_per_kind != 0 else None
    if source is not None:
        report.update(behavior_report(backend, source, probes_per_kind, max_new_tokens, on_result=on_result,
                                      split=split))
    elif probes_per_kind != 0:
        report["probes"] = {"skipped": f"no {default / f'{split}.jsonl'}"}
    if natural:
        from codette.evaluate.natural_run import natural_report

        report.update(natural_report(backend, max_new_tokens, on_result=on_natural, constrain=constrain))
    report["samples"] = sample_chats(backend, samples, on_result=_per_item(on_progress, "samples"))


def evaluate_checkpoint(checkpoint: Path | str, packed_dir: Path | str, tokenizer_dir: Path | str | None = None,
                        batch_size: int = 16, max_batches: int | None = None, samples: int = len(SHOWCASE),
                        device: str = "cpu", probe_dir: Path | str | None = None,
                        probes_per_kind: PerKind = DEFAULT_PROBES_PER_KIND, max_new_tokens: int = 128,
                        on_result: Callable[[int, int, dict], None] | None = None, split: str = "test",
                        natural: bool = False, on_natural: Callable[[int, int, dict], None] | None = None,
                        on_progress: OnProgress | None = None, constrain: bool = True) -> dict:
    """LM metrics over the held-out ``split`` (or ``max_batches``), its behavioral probes, and sample chats.

    ``probes_per_kind=0`` skips the probes; ``None`` runs every probe. ``natural`` adds the natural-prompt
    set (:mod:`codette.evaluate.natural`): ``natural`` in the report, ``natural_results`` per item; its tool
    calls are held while decoding unless ``constrain`` is False. ``on_progress`` reports every stage
    (:data:`STAGES`).
    """
    _check_split(split)
    checkpoint = Path(checkpoint)
    backend = LocalBackend.from_checkpoint(checkpoint, tokenizer_dir, device)
    held_out = PackedSplit(packed_dir, split)
    if int(held_out.meta["vocab_size"]) != len(backend.tokenizer):
        raise CodetteError(f"{packed_dir} was packed with a {held_out.meta['vocab_size']}-token tokenizer, "
                           f"but the checkpoint's tokenizer has {len(backend.tokenizer)}")
    seq_len = backend.model.cfg.max_seq_len
    sampler = BatchSampler(held_out, seq_len, seed=0)
    token_bytes = token_byte_lengths(backend.tokenizer, backend.model.cfg.vocab_size)
    windows = sampler.n_blocks if max_batches is None else min(sampler.n_blocks, max_batches * batch_size)
    batches = _counted(sampler.sequential(batch_size, max_batches), -(-windows // batch_size), on_progress)
    m = evaluate_lm(backend.model, batches, device, token_bytes=token_bytes)
    report: dict[str, Any] = {"checkpoint": str(checkpoint), "backend": "local", "step": backend.step,
                              **lm_figures(m, split)}
    _add_behavior(report, backend, checkpoint, probe_dir, probes_per_kind, max_new_tokens, samples, on_result, split,
                  natural, on_natural, on_progress, constrain)
    return report


def gguf_lm_metrics(backend: GGUFBackend, packed_dir: Path | str, max_sequences: int | None = 64,
                    split: str = "test", on_progress: OnProgress | None = None) -> dict:
    """Loss, perplexity, token accuracy and bits per byte of a held-out split, from llama.cpp's logits.

    The same packed windows and target mask as :func:`evaluate_checkpoint` (the first
    ``max_sequences`` of them, all when None), so the numbers of a GGUF and of its checkpoint are
    comparable (``codette eval --max-batches B`` scores the first 16 x B windows of both).
    The packed ids must mean the same tokens as the GGUF's vocabulary: the tokenizer beside
    ``packed/`` is checked against it, and a mismatch is refused rather than scored as garbage.
    ``backend`` is the one that also answers the probes (built with ``logits_all=True``), so the
    file is loaded once.
    """
    from codette.backends.gguf import check_vocab
    from codette.tokenizer import CodetteTokenizer
    from codette.tokenizer.bpe import TOKENIZER_FILE

    if not backend.logits_all:
        raise ValueError("gguf_lm_metrics needs a GGUFBackend built with logits_all=True")
    path, gguf_tokens, llm = backend.path, backend.meta.tokens, backend.llm
    held_out = PackedSplit(packed_dir, split)
    tok_dir = Path(packed_dir).parent
    tok = CodetteTokenizer.load(tok_dir) if (tok_dir / TOKENIZER_FILE).is_file() else None
    if tok is not None:
        check_vocab(gguf_tokens, tok, path, tok_dir)
    packed_vocab = int(held_out.meta["vocab_size"])
    if packed_vocab > len(gguf_tokens) or (tok is not None and packed_vocab != len(tok)):
        raise CodetteError(f"{packed_dir} was packed with a {packed_vocab}-token tokenizer, but {path} has "
                           f"{len(gguf_tokens)} tokens" + (f" and {tok_dir / TOKENIZER_FILE} {len(tok)}" if tok else "")
                           + ": they are not the same vocabulary")
    # The trained context (the checkpoint's max_seq_len), not llm.n_ctx(): llama.cpp rounds that up.
    sampler = BatchSampler(held_out, backend.n_ctx, seed=0)
    tally = LMTally(token_byte_lengths(tok, llm.n_vocab()) if tok is not None else None)
    n_seq = sampler.n_blocks if max_sequences is None else min(max_sequences, sampler.n_blocks)
    for b in range(n_seq):
        x, y = sampler.window(b)
        llm.reset()
        llm.eval(x.tolist())
        # fp64, as llama.cpp's fp32 logits summed over thousands of targets deserve.
        tally.add(torch.from_numpy(np.asarray(llm.scores[: len(x)], dtype=np.float64)), y)
        if on_progress:
            on_progress("lm", b + 1, n_seq)
    m = tally.metrics()
    if m.tokens == 0:
        raise CodetteError(f"{packed_dir}: the {split} split has no target tokens to score")
    return lm_figures(m, split)


def evaluate_gguf(path: Path | str, probe_dir: Path | str | None = None, packed_dir: Path | str | None = None,
                  tokenizer_dir: Path | str | None = None, probes_per_kind: PerKind = DEFAULT_PROBES_PER_KIND,
                  max_new_tokens: int = 128, samples: int = len(SHOWCASE), lm_sequences: int | None = 64,
                  on_result: Callable[[int, int, dict], None] | None = None, split: str = "test",
                  natural: bool = False, on_natural: Callable[[int, int, dict], None] | None = None,
                  on_progress: OnProgress | None = None, constrain: bool = True) -> dict:
    """The same probes (and, when ``packed/`` is there, LM metrics) for an exported GGUF."""
    _check_split(split)
    from codette.backends.gguf import GGUFBackend

    path = Path(path)
    packed = Path(packed_dir) if packed_dir else path.parent / "packed"
    score_lm = lm_sequences != 0 and (packed / f"{split}.json").is_file()
    backend = GGUFBackend(path, tokenizer_dir, logits_all=score_lm)
    try:
        report: dict[str, Any] = {"checkpoint": str(path), "backend": "gguf", "step": None}
        if score_lm:
            report.update(gguf_lm_metrics(backend, packed, lm_sequences, split=split, on_progress=on_progress))
        else:
            log.info("no packed %s split at %s: LM metrics skipped for the GGUF", split, packed)
        _add_behavior(report, backend, path, probe_dir, probes_per_kind, max_new_tokens, samples, on_result, split,
                      natural, on_natural, on_progress, constrain)
    finally:
        backend.close()
    return report


def _check_split(split: str) -> None:
    if split not in HELD_OUT:
        raise CodetteError(f"--split must be one of {', '.join(HELD_OUT)} (a held-out split), got {split!r}")


def evaluate_path(path: Path | str, **kw: Any) -> dict:
    """Dispatch on the file type: ``.gguf`` -> :func:`evaluate_gguf`, anything else a PyTorch checkpoint."""
    path = Path(path)
    if path.suffix.lower() == ".gguf":
        batch_size = kw.pop("batch_size", 16)
        max_batches = kw.pop("max_batches", None)
        kw.pop("device", None)
        # The checkpoint path scores the first batch_size x max_batches windows of the split (all
        # without a limit); the GGUF scores the same windows, so the two reports compare like with like.
        kw.setdefault("lm_sequences", None if max_batches is None else max_batches * batch_size)
        return evaluate_gguf(path, probe_dir=kw.pop("probe_dir", None), packed_dir=kw.pop("packed_dir", None), **kw)
    packed = kw.pop("packed_dir", None) or path.parent / "packed"
    return evaluate_checkpoint(path, packed, **kw)
