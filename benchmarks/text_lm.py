"""Plain-text language modelling at equal wall time: Codette through its own CLI against a nanoGPT-style
byte-level reference, in the same run, scored in bits per byte on the same held-out bytes.

Corpus: a file you name (``--text``), or the Python standard library's own ``.py`` files (sorted by
name, concatenated up to ``--corpus-bytes``), which every machine with Python has. The first 90%
(cut at a line end) is training text, the last 10% validation.

- Codette: ``codette data --source train.txt --no-synthetic`` (through a config file), ``codette
  tokenizer``, ``codette train``, each a subprocess as a user runs them. ``train.max_steps`` comes from
  a few timed steps of the same shape, and the run is stopped with Ctrl-C (SIGINT: it finishes the
  step and saves a checkpoint) if it is still going at the budget, so its wall time, start-up and
  final save included, is at most the budget.
- Reference: nanoGPT's CPU example (4 layers, 4 heads, d_model 128, 64-byte context, batch 12,
  AdamW lr 1e-3 with warmup and cosine decay to 1e-4, beta2 0.99, clipping at 1.0) over bytes (256
  symbols), trained in this process for the same budget, its schedule by elapsed time.

Bits per byte = (total nats over the validation text) / ln 2 / (validation bytes, UTF-8): each model
predicts every token of the validation text but its first, from the tokens before it in windows of
its own context (no overlap), so the figure is comparable across tokenizers.

    python benchmarks/text_lm.py --budgets 90,240
    python benchmarks/text_lm.py --text my_corpus.txt --budgets 60
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import RefGPT, Shape, codette_step  # noqa: E402  (the same two training steps)

REF = Shape("nanogpt-char", 4, 4, 128, 64, 12, 256)
CODETTE_MODEL = {"preset": "tiny", "d_model": 128, "n_layers": 4, "n_heads": 4, "max_seq_len": 128}
CODETTE_BATCH = 16


def stdlib_corpus(limit: int) -> str:
    parts, size = [], 0
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        parts.append(text)
        size += len(text.encode("utf-8"))
        if size >= limit:
            break
    return "\n".join(parts)


def split(text: str) -> tuple[str, str]:
    cut = text.rfind("\n", 0, int(len(text) * 0.9)) + 1
    return text[:cut], text[cut:]


def codette_cli(*args: str, cwd: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "codette", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"codette {' '.join(args)} failed:\n{proc.stderr[-2000:]}")


def steps_per_second(vocab: int, threads: int) -> float:
    """A few timed steps of Codette's own training step at the benchmark's shape."""
    shape = Shape("codette", CODETTE_MODEL["n_layers"], CODETTE_MODEL["n_heads"], CODETTE_MODEL["d_model"],
                  CODETTE_MODEL["max_seq_len"], CODETTE_BATCH, vocab)
    x = torch.randint(0, vocab, (shape.batch, shape.seq_len))
    step, _, _ = codette_step(shape, torch.device("cpu"), "fp32", x, x)
    step()
    t0 = time.perf_counter()
    for _ in range(5):
        step()
    return 5 / (time.perf_counter() - t0)


def train_codette(work: Path, train_text: str, budget: float, threads: int, vocab_tokens: int) -> tuple[Path, float, int]:
    """Data, tokenizer (once) and a budgeted training run; returns (checkpoint, seconds, steps)."""
    from codette.checkpoint import latest_valid_checkpoint
    from codette.model import padded_vocab

    run = work / f"codette_{int(budget)}"
    cfg = {"out_dir": str(run),
           "data": {"sources": [str(work / "train.txt")], "synthetic": False, "val_fraction": 0.02,
                    "test_fraction": 0.02},
           "tokenizer": {"vocab_size": vocab_tokens},
           "model": CODETTE_MODEL,
           "train": {"lr": 1e-3, "batch_size": CODETTE_BATCH, "threads": threads, "probes": 0,
                     "eval_batches": 4, "save_every": 10**6, "log_every": 25, "device": "cpu", "dtype": "auto"}}
    (work / "train.txt").write_text(train_text, encoding="utf-8")
    path = work / f"codette_{int(budget)}.json"
    path.write_text(json.dumps(cfg))
    codette_cli("data", "-c", str(path), cwd=work)
    codette_cli("tokenizer", "-c", str(path), cwd=work)
    from codette.tokenizer import CodetteTokenizer

    rate = steps_per_second(padded_vocab(len(CodetteTokenizer.load(run))), threads)
    steps = max(20, int(rate * (budget - 10)))  # start-up, the final evaluation and save take a few seconds
    cfg["train"].update(max_steps=steps, warmup_steps=max(1, steps // 20), eval_every=steps)
    path.write_text(json.dumps(cfg))
    t0 = time.perf_counter()
    log = work / f"train_{int(budget)}.log"
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "codette", "train", "-c", str(path)], cwd=work,
                                stdout=subprocess.DEVNULL, stderr=err)
        try:
            proc.wait(timeout=budget)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT)  # finish the step, save a checkpoint
            proc.wait()
    seconds = time.perf_counter() - t0
    final = run / "model_final.pt"
    ckpt = final if final.is_file() else latest_valid_checkpoint(run)
    if proc.returncode not in (0, 130) or ckpt is None:
        raise SystemExit(f"codette train failed or left no checkpoint:\n{log.read_text()[-2000:]}")
    return ckpt, seconds, steps


@torch.no_grad()
def codette_nats(ckpt: Path, val_text: str) -> tuple[float, int]:
    from codette.checkpoint import load_model
    from codette.tokenizer import CodetteTokenizer

    model, state = load_model(ckpt)
    tok = CodetteTokenizer.load(ckpt.parent)
    ids = torch.tensor([tok.bos_id, *tok.encode(val_text)])
    t = model.cfg.max_seq_len
    nats = 0.0
    for s in range(0, len(ids) - 1, t):
        x, y = ids[s : s + t], ids[s + 1 : s + t + 1]
        x = x[: len(y)]
        nats += float(model(x[None], y[None]).loss_sum)
    return nats, int(state.get("step", 0))


def train_reference(train_bytes: bytes, budget: float, seed: int = 0) -> tuple[RefGPT, int]:
    torch.manual_seed(seed)
    data = torch.frombuffer(bytearray(train_bytes), dtype=torch.uint8).long()
    model = RefGPT(REF)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.99), fused=True)
    gen = torch.Generator().manual_seed(seed)
    t0, steps = time.perf_counter(), 0
    while (elapsed := time.perf_counter() - t0) < budget:
        progress = elapsed / budget
        lr = 1e-3 * progress / 0.05 if progress < 0.05 else 1e-4 + 0.5 * 9e-4 * (1 + math.cos(math.pi * progress))
        for group in opt.param_groups:
            group["lr"] = lr
        starts = torch.randint(0, len(data) - REF.seq_len - 1, (REF.batch,), generator=gen)
        x = torch.stack([data[s : s + REF.seq_len] for s in starts])
        y = torch.stack([data[s + 1 : s + 1 + REF.seq_len] for s in starts])
        loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        steps += 1
    return model, steps


@torch.no_grad()
def reference_nats(model: RefGPT, val_bytes: bytes) -> float:
    model.eval()
    ids = torch.frombuffer(bytearray(val_bytes), dtype=torch.uint8).long()
    nats = 0.0
    for s in range(0, len(ids) - 1, REF.seq_len):
        y = ids[s + 1 : s + REF.seq_len + 1]
        x = ids[s : s + len(y)]
        nats += float(model(x[None], y[None], reduction="sum"))
    return nats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--text", type=Path, help="a UTF-8 text file (default: the standard library's .py files)")
    ap.add_argument("--corpus-bytes", type=int, default=1_500_000)
    ap.add_argument("--budgets", default="90,240", help="training seconds per model, comma-separated")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads for both (1: a shared machine)")
    ap.add_argument("--vocab", type=int, default=2048, help="Codette's tokenizer size")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    text = args.text.read_text(encoding="utf-8") if args.text else stdlib_corpus(args.corpus_bytes)
    train_text, val_text = split(text)
    val_bytes = val_text.encode("utf-8")
    print(f"corpus {'stdlib .py files' if not args.text else args.text}: {len(text.encode('utf-8')):,} bytes; "
          f"train {len(train_text.encode('utf-8')):,}, val {len(val_bytes):,}; {args.threads} thread(s); "
          f"{os.cpu_count()} CPUs", flush=True)
    denom = math.log(2) * len(val_bytes)
    with tempfile.TemporaryDirectory(prefix="codette_text_lm_") as tmp:
        for budget in (float(b) for b in args.budgets.split(",")):
            ckpt, seconds, planned = train_codette(Path(tmp), train_text, budget, args.threads, args.vocab)
            c_nats, c_steps = codette_nats(ckpt, val_text)
            ref, r_steps = train_reference(train_text.encode("utf-8"), budget)
            r_nats = reference_nats(ref, val_bytes)
            c_bpb, r_bpb = c_nats / denom, r_nats / denom
            print(f"budget {budget:.0f} s: codette {c_bpb:.3f} bits/byte ({c_steps} of {planned} planned steps, "
                  f"{seconds:.0f} s wall incl. start-up) | reference {r_bpb:.3f} bits/byte ({r_steps} steps) | "
                  f"codette/reference {c_bpb / r_bpb:.3f} (goal <= 0.9)", flush=True)


if __name__ == "__main__":
    main()
