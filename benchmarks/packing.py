"""How often a run reads each train token, stream against best-fit packing, with no training:
``python benchmarks/packing.py -o OUT -c quickstart.toml`` after ``codette data`` and ``codette tokenizer``
into OUT with the same config.

Packs OUT's splits (as ``codette train`` would), then prints for each ``train.packing`` the reading plan
that ``codette train`` logs at its start (:func:`codette.data.loader.reading_plan`): processed tokens
(steps x sequences per step x seq_len), the train split's distinct tokens, their ratio, windows per
epoch, epochs and best-fit's padding fraction, and how long the first epoch's plan took to build.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from codette.config import PACKINGS, build_config
from codette.data.build import ensure_packed
from codette.data.loader import BatchSampler, BestFitSampler, reading_plan
from codette.data.pack import PackedSplit
from codette.model.presets import resolve_preset
from codette.tokenizer import CodetteTokenizer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--out-dir", type=Path, required=True, help="a folder with data/ and tokenizer.json")
    ap.add_argument("-c", "--config", type=Path, default=None, help="the run's config file")
    args = ap.parse_args()
    cfg = build_config(args.config, {"out_dir": str(args.out_dir)})
    tok = CodetteTokenizer.load(args.out_dir)
    split = PackedSplit(ensure_packed(args.out_dir, tok, cfg.data.assistant_only_loss), "train")
    seq_len = cfg.train.seq_len or resolve_preset(cfg.model.preset, dataclasses.asdict(cfg.model), len(tok)).max_seq_len
    per_step = cfg.train.batch_size * cfg.train.grad_accum
    rows = {}
    for packing in PACKINGS:
        t0 = time.perf_counter()
        sampler = BestFitSampler(split, seq_len, cfg.train.seed) if packing == "bestfit" else \
            BatchSampler(split, seq_len, cfg.train.seed, aligned=not split.plain_text, random_offsets=split.plain_text)
        plan = reading_plan(sampler, cfg.train.max_steps, per_step)
        rows[packing] = {**plan, "plan_seconds": round(time.perf_counter() - t0, 3)}
    lengths = [int(b) - int(a) for a, b in zip(split.doc_starts, [*split.doc_starts[1:], len(split)])]
    print(json.dumps({"documents": len(lengths), "mean_tokens": sum(lengths) / len(lengths),
                      "longest": max(lengths), "seq_len": seq_len, "steps": cfg.train.max_steps,
                      "sequences_per_step": per_step, **rows}, indent=2))


if __name__ == "__main__":
    main()
