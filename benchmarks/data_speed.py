"""How fast the synthetic data is made: ``python benchmarks/data_speed.py --samples 5000``.

Runs the whole data stage (generation with real tool runs, JSONL writing, statistics) into a
temporary folder and prints samples per second, wall time and peak memory (VmHWM). Pin it to one
core with ``taskset -c 0`` to reproduce the "one core" numbers; the Python worker and the fixture
server add little CPU of their own.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

from codette.config import DataConfig
from codette.data.build import build_dataset


def peak_rss_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="keep the data here (default: a temporary folder)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        t0 = time.perf_counter()
        cpu0 = time.process_time()
        stats = build_dataset(DataConfig(samples=args.samples, seed=args.seed), out)
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        syn = stats.synthetic or {}
        result = {
            "samples": args.samples, "seconds": round(wall, 2), "cpu_seconds": round(cpu, 2),
            "samples_per_second": round(args.samples / wall, 1), "peak_rss_mb": round(peak_rss_mb(), 1),
            "distinct_ratio": round(syn.get("distinct_ratio", 0), 4), "overlap": syn.get("overlap"),
            "shares": {k: round(v, 4) for k, v in syn.get("shares", {}).items()},
            "tool_calls": syn.get("tool_calls"), "tool_errors": syn.get("tool_errors"),
            "train": stats.train, "val": stats.val,
            "jsonl_mb": round(sum((out / f).stat().st_size for f in ("train.jsonl", "val.jsonl")) / 2**20, 1),
        }
    print(json.dumps(result, indent=2))
    print(f"{args.samples} samples in {wall:.1f} s: {args.samples / wall:,.0f} samples/s "
          f"(CPU {cpu:.1f} s), peak RSS {result['peak_rss_mb']} MB")


if __name__ == "__main__":
    main()
