"""Each CLI verb as a function: read the config, call the stage, report. The quickstart chains them.

Output folder layout (``out_dir``, default ``codette_model/``)::

    data/{train,val}.jsonl, data/stats.json   conversations (codette data)
    tokenizer.json, tokenizer_config.json     byte-level BPE + chat template (codette tokenizer)
    packed/{train,val}.bin/.mask.bin/.json    token memmaps (made on first train)
    model_best.pt, model_step_N.pt, model_final.pt
    run_config.json, eval.json
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from codette.checkpoint import file_sha256
from codette.config import RunConfig, to_dict
from codette.data.build import build_dataset, pack_dataset, training_texts
from codette.data.pack import PackedSplit
from codette.errors import CodetteError
from codette.evaluate.run import evaluate_checkpoint
from codette.fileio import atomic_write_text, ensure_writable_dir
from codette.model import ModelConfig, padded_vocab, preset_config
from codette.tokenizer import CodetteTokenizer
from codette.tokenizer.bpe import TOKENIZER_FILE
from codette.tokenizer.build import train_tokenizer
from codette.train import TrainResult, train

# What `codette quickstart` changes from the defaults: a tiny model and a short, fast schedule.
QUICKSTART: dict = {
    "tokenizer": {"vocab_size": 4096},
    "model": {"preset": "tiny"},
    "train": {"lr": 1e-3, "warmup_steps": 30, "max_steps": 300, "eval_every": 100, "save_every": 100,
              "batch_size": 16, "eval_batches": 50, "log_every": 25},
}


def _out(cfg: RunConfig) -> Path:
    return ensure_writable_dir(Path(cfg.out_dir))


def run_data(cfg: RunConfig, console: Console) -> dict:
    out = _out(cfg)
    stats = build_dataset(cfg.data, out / "data")
    table = Table(title=f"Dataset written to {out / 'data'}")
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("train conversations", str(stats.train))
    table.add_row("val conversations", str(stats.val))
    if stats.synthetic:
        s = stats.synthetic
        for cat, share in s["shares"].items():
            table.add_row(f"share: {cat}", f"{share:.1%}")
        table.add_row("distinct-sample ratio", f"{s['distinct_ratio']:.3f}")
        table.add_row("val combinations also in train", str(s["overlap"]))
    if stats.user_documents:
        table.add_row("your documents", str(stats.user_documents))
    console.print(table)
    return stats.as_dict()


def run_tokenizer(cfg: RunConfig, console: Console) -> CodetteTokenizer:
    out = _out(cfg)
    model_cfg = _model_config(cfg, vocab_tokens=None)
    tok = train_tokenizer(training_texts(out / "data"), cfg.tokenizer, out, model_max_length=model_cfg.max_seq_len)
    console.print(f"tokenizer: {len(tok)} tokens (embedding rows {padded_vocab(len(tok))}) -> {out / TOKENIZER_FILE}")
    return tok


def _model_config(cfg: RunConfig, vocab_tokens: int | None) -> ModelConfig:
    overrides = {k: v for k, v in dataclasses.asdict(cfg.model).items() if k != "preset" and v is not None}
    if vocab_tokens is not None:
        overrides["vocab_size"] = padded_vocab(vocab_tokens)
    try:
        return preset_config(cfg.model.preset, **overrides)
    except KeyError as exc:
        raise CodetteError(str(exc.args[0])) from None
    except ValueError as exc:
        raise CodetteError(f"model config: {exc}") from None


def ensure_packed(out: Path, tok: CodetteTokenizer, assistant_only: bool) -> Path:
    """Pack the splits unless an up-to-date packing (same tokenizer and masking) exists."""
    packed = out / "packed"
    sha = file_sha256(out / TOKENIZER_FILE)
    stamp = packed / "source.json"
    want = {"tokenizer_sha256": sha, "assistant_only": assistant_only}
    if stamp.is_file() and json.loads(stamp.read_text()) == want:
        try:
            PackedSplit(packed, "train"), PackedSplit(packed, "val")
            return packed
        except CodetteError:
            pass
    pack_dataset(out / "data", tok, packed, assistant_only)
    atomic_write_text(stamp, json.dumps(want))
    return packed


def run_train(cfg: RunConfig, console: Console, resume: str | None = None) -> TrainResult:
    out = _out(cfg)
    _model_config(cfg, vocab_tokens=None)  # a bad preset or shape fails before anything is loaded
    tok = CodetteTokenizer.load(out)
    model_cfg = _model_config(cfg, vocab_tokens=len(tok))
    packed = ensure_packed(out, tok, cfg.data.assistant_only_loss)
    atomic_write_text(out / "run_config.json", json.dumps(to_dict(cfg), indent=2))
    result = train(cfg.train, model_cfg, packed, out, Path(cfg.log_dir), resume=resume, run_config=to_dict(cfg),
                   tokenizer_sha256=file_sha256(out / TOKENIZER_FILE), console=console)
    ev = result.last_eval
    if ev:
        console.print(f"step {result.steps}: val_loss {ev['val_loss']:.3f}  token accuracy "
                      f"{ev['token_accuracy']:.1%}  ({result.train_tokens_per_second:,.0f} train tokens/s)")
    console.print(f"checkpoints in {out} (best: {result.best_checkpoint})")
    return result


def run_eval(checkpoint: Path, console: Console, data_dir: Path | None = None, output: Path | None = None,
             max_batches: int | None = None, extra: dict | None = None) -> dict:
    checkpoint = Path(checkpoint)
    report = evaluate_checkpoint(checkpoint, data_dir or checkpoint.parent / "packed", max_batches=max_batches)
    report.update(extra or {})
    output = output or checkpoint.parent / "eval.json"
    atomic_write_text(output, json.dumps(report, indent=2, ensure_ascii=False))
    table = Table(title=f"Held-out evaluation of {checkpoint.name} (step {report['step']})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("val loss (nats/token)", f"{report['val_loss']:.4f}")
    table.add_row("val perplexity", f"{report['val_perplexity']:.3f}")
    table.add_row("val token accuracy", f"{report['val_token_accuracy']:.2%}")
    table.add_row("val target tokens", f"{report['val_tokens']:,}")
    console.print(table)
    for chat in report["samples"]:
        console.print(Panel(Text(chat["assistant"]), title=Text(f"user: {chat['user']}"), title_align="left"))
    console.print(f"written to {output}")
    return report


def run_quickstart(cfg: RunConfig, console: Console) -> dict:
    t0 = time.perf_counter()
    console.rule("1/4 data")
    run_data(cfg, console)
    console.rule("2/4 tokenizer")
    run_tokenizer(cfg, console)
    console.rule("3/4 train")
    result = run_train(cfg, console)
    console.rule("4/4 evaluate")
    ckpt = result.best_checkpoint or result.final_checkpoint
    extra = {"train_tokens_per_second": result.train_tokens_per_second, "train_seconds": result.train_seconds,
             "train_steps": result.steps}
    report = run_eval(ckpt, console, extra=extra)
    report["wall_seconds"] = time.perf_counter() - t0
    atomic_write_text(Path(cfg.out_dir) / "eval.json", json.dumps(report, indent=2, ensure_ascii=False))
    console.print(f"quickstart finished in {report['wall_seconds']:.0f} s; try:\n"
                  f"  codette generate {ckpt} --prompt \"Who are you?\"")
    return report
