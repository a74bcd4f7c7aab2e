"""Memory and speed of a large user corpus: ``python benchmarks/large_corpus.py --gb 2``.

Writes a synthetic text file of the given size (paragraphs of common words), then runs the data
stage on it (streaming read, JSONL split files) and packs the splits into token memmaps with a
small tokenizer, and prints the throughput and the peak RSS (VmHWM) of each step. Reading, writing
and tokenizing all stream, so the peak stays near the interpreter's baseline whatever the file size.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

from codette.config import DataConfig
from codette.data.build import build_dataset, pack_dataset
from codette.tokenizer import CodetteTokenizer

WORDS = ("the of and to in is was for on that with as by at from this are be or it an which have not had were "
         "but all one can their has more will other its new some also what so time about into them only like two "
         "could these first may then do any my now over such our most used river garden planet violin lantern").split()


def status_mb(field: str) -> float:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def write_corpus(path: Path, size: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    paragraphs = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 150))) + "."
                  + ("\n\n" if rng.random() < 0.7 else "\n") for _ in range(4000)]
    with path.open("w", encoding="utf-8") as fh:
        while fh.tell() < size:
            fh.write("".join(rng.choices(paragraphs, k=200)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gb", type=float, default=2.0)
    ap.add_argument("--dir", type=Path, default=None, help="work folder (default: a temporary one; needs ~3x the size)")
    ap.add_argument("--no-pack", action="store_true", help="stop after the data stage")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        src = work / "corpus.txt"
        t = time.perf_counter()
        write_corpus(src, int(args.gb * 2**30))
        size_mb = src.stat().st_size / 2**20
        print(f"wrote {src} ({size_mb:,.0f} MB) in {time.perf_counter() - t:.0f} s")
        tok = CodetteTokenizer.train([src.open(encoding="utf-8").read(1_000_000)], vocab_size=1024)
        base = status_mb("VmRSS")
        t = time.perf_counter()
        stats = build_dataset(DataConfig(synthetic=False, sources=[str(src)]), work / "data")
        build_s = time.perf_counter() - t
        result = {"corpus_mb": round(size_mb), "documents": stats.user_documents, "baseline_rss_mb": round(base, 1),
                  "build_seconds": round(build_s, 1), "build_mb_per_s": round(size_mb / build_s, 1),
                  "peak_rss_after_build_mb": round(status_mb("VmHWM"), 1)}
        print(json.dumps(result))
        if not args.no_pack:
            t = time.perf_counter()
            packed = pack_dataset(work / "data", tok, work / "packed")
            pack_s = time.perf_counter() - t
            tokens = sum(p.tokens for p in packed.values())
            result.update({"pack_seconds": round(pack_s, 1), "tokens": tokens,
                           "tokens_per_second": round(tokens / pack_s), "pack_mb_per_s": round(size_mb / pack_s, 2),
                           "peak_rss_mb": round(status_mb("VmHWM"), 1)})
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
