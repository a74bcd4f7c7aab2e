"""The `codette` command line: thin wiring of the pipeline stages.

``data``, ``tokenizer``, ``train`` and ``quickstart`` accept ``--config FILE`` (TOML/YAML/JSON) and
``--out-dir``; flags override the file. ``export`` takes ``--out-dir``, ``report`` ``--out`` and ``eval``
``--output`` (each with a default beside its input); ``generate``, ``presets``, ``inspect``, ``chat``,
``ask`` and ``serve`` write no files of their own; their tools write only in their workspace (for
``chat`` and ``ask`` the current folder or ``--workspace``: ``chat`` asks first, ``ask`` needs ``--yes``).
User mistakes end with a one-line ``error:`` message (exit 2), never a traceback.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from inspect import Parameter, Signature, signature  # not `import inspect`: a verb has that name
from pathlib import Path
from typing import Any, Optional, get_type_hints

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table

from codette.cli import stages
from codette.config import RECIPES, RunConfig, build_config
from codette.errors import CodetteError, TrainingInterrupted

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    help="Train your own small Codette language model and run it locally.",
)
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)

ConfigOpt = typer.Option(None, "--config", "-c", help="TOML/YAML/JSON config file.")
OutOpt = typer.Option(None, "--out-dir", "-o", help="Output folder (default codette_model/).")


def _config(config: Optional[Path], **overrides: object) -> RunConfig:
    return build_config(config, {k: v for k, v in overrides.items() if v is not None})


def _gb(n: int) -> str:
    return f"{n / 1e9:,.2f} GB" if n >= 1e9 else f"{n / 1e6:,.1f} MB"


@app.command()
def data(
    config: Optional[Path] = ConfigOpt,
    out_dir: Optional[str] = OutOpt,
    samples: Optional[int] = typer.Option(None, help="Synthetic conversations to generate (default 5000)."),
    seed: Optional[int] = typer.Option(None, help="Random seed of the generator."),
    source: Optional[list[str]] = typer.Option(None, "--source", "-s", help="Your own .txt/.jsonl file or folder."),
    synthetic: Optional[bool] = typer.Option(None, "--synthetic/--no-synthetic", help="Include Codette's data."),
    errors: Optional[str] = typer.Option(None, help="Invalid UTF-8 in your files: strict or replace."),
    mix: Optional[str] = typer.Option(None, help="Ratios of the final dataset, e.g. synthetic=0.5,my.jsonl=0.5 "
                                                 "(sum to 1; --samples is the total)."),
    skip_bad: Optional[bool] = typer.Option(None, "--skip-bad", help="Skip and count bad JSONL lines instead of failing."),
    copy_docs: Optional[int] = typer.Option(None, "--copy-docs", help="Also write this many copy documents: requests "
                                            "and their tool calls as plain text, learned on every token (with "
                                            "--mix: give copy a ratio instead)."),
    stats: bool = typer.Option(False, "--stats", help="Also write the data card (card.json, card.png) and print it."),
) -> None:
    """Generate the Codette conversations (and add your own files) as train/val/test JSONL."""
    from codette.data.mix import parse_mix

    cfg = _config(config, out_dir=out_dir, **{"data.samples": samples, "data.seed": seed, "data.sources": source,
                                             "data.synthetic": synthetic, "data.errors": errors,
                                             "data.mix": parse_mix(mix) if mix is not None else None,
                                             "data.skip_bad": skip_bad, "data.copy_docs": copy_docs})
    stages.run_data(cfg, console, card=stats)


@app.command()
def tokenizer(
    config: Optional[Path] = ConfigOpt,
    out_dir: Optional[str] = OutOpt,
    vocab_size: Optional[int] = typer.Option(None, help="Target vocabulary size (default 32768)."),
) -> None:
    """Train the byte-level BPE tokenizer on the training split."""
    cfg = _config(config, out_dir=out_dir, **{"tokenizer.vocab_size": vocab_size})
    stages.run_tokenizer(cfg, console)


@app.command()
def train(
    config: Optional[Path] = ConfigOpt,
    out_dir: Optional[str] = OutOpt,
    preset: Optional[str] = typer.Option(None, help="Model preset (see `codette presets`)."),
    block_style: Optional[str] = typer.Option(None, help="codette (LayerNorm+GELU) or llama (RMSNorm+SwiGLU)."),
    max_steps: Optional[int] = typer.Option(None),
    lr: Optional[float] = typer.Option(None),
    warmup_steps: Optional[int] = typer.Option(None),
    batch_size: Optional[int] = typer.Option(None),
    grad_accum: Optional[int] = typer.Option(None),
    seq_len: Optional[int] = typer.Option(None),
    eval_every: Optional[int] = typer.Option(None),
    save_every: Optional[int] = typer.Option(None),
    device: Optional[str] = typer.Option(None, help="auto, cpu, cuda or mps."),
    seed: Optional[int] = typer.Option(None),
    resume: Optional[str] = typer.Option(None, help="Checkpoint to continue from, or 'auto' for the newest valid one."),
    init_from: Optional[str] = typer.Option(
        None, help="Start from the weights of this checkpoint or run folder (new optimizer and schedule, step 0); "
                   "a resumed run continues its own checkpoint instead."),
    tensorboard: Optional[bool] = typer.Option(None, "--tensorboard/--no-tensorboard",
                                               help="Also write TensorBoard events to <log_dir>/tensorboard/."),
    parallel: Optional[str] = typer.Option(None, help="Under torchrun: ddp, fsdp (sharded) or auto (by model size)."),
    compile_: Optional[bool] = typer.Option(None, "--compile/--no-compile", help="torch.compile each block."),
    activation_checkpointing: Optional[bool] = typer.Option(
        None, "--activation-checkpointing/--no-activation-checkpointing",
        help="Recompute block activations in the backward pass (less memory, more compute)."),
    lora_rank: Optional[int] = typer.Option(
        None, "--lora-rank", help="Train rank-R LoRA adapters (peft) on --init-from's frozen weights; 0: every "
                                  "weight (docs/FINETUNE.md)."),
    lora_alpha: Optional[float] = typer.Option(None, "--lora-alpha", help="The adapters' scale is alpha/rank "
                                                                          "(default 2 x rank)."),
    lora_targets: Optional[str] = typer.Option(
        None, "--lora-targets", help="Projections that get adapters, e.g. q_proj,v_proj (default: all of q_proj, "
                                     "k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj the model has)."),
) -> None:
    """Train (or resume training) a model on the packed data; under torchrun, on every process it starts."""
    targets = [t.strip() for t in lora_targets.split(",") if t.strip()] if lora_targets is not None else None
    cfg = _config(config, out_dir=out_dir, **{
        "model.preset": preset, "model.block_style": block_style, "train.max_steps": max_steps, "train.lr": lr,
        "train.warmup_steps": warmup_steps, "train.batch_size": batch_size, "train.grad_accum": grad_accum,
        "train.seq_len": seq_len, "train.eval_every": eval_every, "train.save_every": save_every,
        "train.device": device, "train.seed": seed, "train.tensorboard": tensorboard, "train.parallel": parallel,
        "train.compile": compile_, "train.activation_checkpointing": activation_checkpointing,
        "train.init_from": init_from, "train.lora_rank": lora_rank, "train.lora_alpha": lora_alpha,
        "train.lora_targets": targets})
    stages.run_train_stages(cfg, console, resume=resume)


@app.command("eval")
def eval_(
    checkpoint: Path = typer.Argument(..., help="A run folder (its model_best.pt, model_final.pt or newest "
                                                "model_step_N.pt, else its one .gguf), a model_*.pt checkpoint or "
                                                "an exported .gguf file."),
    data_dir: Optional[Path] = typer.Option(None, help="Packed data folder (default: packed/ beside the checkpoint)."),
    output: Optional[Path] = typer.Option(None, help="Where to write the JSON (default: eval.json beside it)."),
    max_batches: Optional[int] = typer.Option(None, help="Evaluate at most this many batches."),
    probes: int = typer.Option(stages.DEFAULT_PROBES_PER_KIND,
                               help="Behavioral probes per kind (tool, no-tool, identity, perspective); 0 skips "
                                    "them, -1 runs all."),
    probe_dir: Optional[Path] = typer.Option(None, help="Folder with <split>.jsonl and train.jsonl (default: data/ "
                                                        "beside the checkpoint)."),
    split: str = typer.Option("test", help="Held-out split to score: test (never used in training or to pick "
                                           "model_best.pt) or val (the split that picked it)."),
    natural: bool = typer.Option(False, "--natural/--no-natural",
                                 help="Also run the hand-written natural-prompt set through the agent's tool loop "
                                      "(eval.json's natural section; minutes on a CPU)."),
    constrain: bool = typer.Option(True, "--constrain/--no-constrain",
                                   help="In the natural-prompt set, hold tool calls to the tools' schemas while "
                                        "decoding, as the agent does (--no-constrain: the model's own calls)."),
    kinds: Optional[str] = typer.Option(None, "--kinds", help="Probe kinds to run, e.g. tool (default: tool, no_tool, "
                                                              "identity, perspective)."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or mps (checkpoints; a .gguf runs in llama.cpp)."),
) -> None:
    """Held-out LM metrics (loss, perplexity, accuracy, bits/byte) and behavioral probes with 95% intervals."""
    from codette.evaluate.probes import KINDS

    _check_device(device)
    limit = None if probes < 0 else probes
    per_kind: object = limit
    if kinds is not None:
        names = [k.strip() for k in kinds.split(",") if k.strip()]
        bad = [k for k in names if k not in KINDS]
        if bad or not names:
            raise CodetteError(f"--kinds: expected names from {', '.join(KINDS)}, got {kinds!r}")
        per_kind = {k: limit for k in names}
    stages.run_eval(checkpoint, console, data_dir=data_dir, output=output, max_batches=max_batches,
                    probes=per_kind, probe_dir=probe_dir, split=split, natural=natural, device=device,
                    constrain=constrain)


def _check_device(device: str) -> None:
    """``--device`` names a device torch has here, or the user's one-line error (not torch's traceback)."""
    if device not in ("cpu", "cuda", "mps"):
        raise CodetteError(f"--device must be cpu, cuda or mps, got {device!r}")
    import torch

    mps = getattr(torch.backends, "mps", None)
    if (device == "cuda" and not torch.cuda.is_available()) or (device == "mps" and not (mps and mps.is_available())):
        raise CodetteError(f"--device {device}: no {device.upper()} device is available here; use --device cpu")


@app.command()
def generate(
    checkpoint: Path = typer.Argument(..., help="A run folder (its model_best.pt, ...) or a model_*.pt checkpoint."),
    prompt: str = typer.Option(..., "--prompt", "-p", help="The user's message."),
    system: Optional[str] = typer.Option(None, help="Optional system message."),
    max_new_tokens: int = typer.Option(128),
    temperature: float = typer.Option(0.7, help="0 for greedy decoding."),
    top_k: int = typer.Option(0),
    top_p: float = typer.Option(1.0),
    seed: Optional[int] = typer.Option(None),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or mps."),
) -> None:
    """Chat once with a trained checkpoint."""
    from codette.backends.base import SamplingConfig, SamplingError
    from codette.backends.local import LocalBackend

    try:  # the flags are checked before the checkpoint is loaded
        sampling = SamplingConfig(max_new_tokens, temperature, top_k, top_p, seed)
    except SamplingError as exc:
        raise CodetteError("; ".join(f"--{name.replace('_', '-')} must be {rule}, got {value!r}"
                                     for name, rule, value in exc.problems)) from None
    _check_device(device)
    backend = LocalBackend.from_checkpoint(stages.model_path(checkpoint, gguf=False), device=device)
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    reply = backend.chat(messages, sampling=sampling)
    console.print(reply, markup=False, highlight=False, soft_wrap=True)


@app.command()
def presets(
    block_style: str = typer.Option("codette", help="Count parameters for this block style."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    fit: Optional[float] = typer.Option(None, "--fit", metavar="GPU_GB",
                                        help="Plan training on GPUs of this many GB: what each mode keeps per GPU, "
                                             "the largest batch x sequence length that fits and the time (an "
                                             "estimate from FLOPs)."),
    gpus: int = typer.Option(1, "--gpus", help="With --fit: GPUs (DDP and FSDP2 rows when more than 1)."),
    model: Optional[Path] = typer.Option(None, "--model", help="With --fit: plan this Hugging Face model (its folder "
                                                               "or config.json) instead of the presets."),
    lora_rank: int = typer.Option(0, "--lora-rank", help="With --fit: also plan LoRA adapters of this rank (a row "
                                                         "beside each full fine-tuning row)."),
    lora_targets: Optional[str] = typer.Option(None, "--lora-targets", help="With --lora-rank: the adapted "
                                                                            "projections (default: all)."),
    seq_len: Optional[int] = typer.Option(None, "--seq-len", help="With --fit: plan windows of at most this many "
                                                                  "tokens (default: the model's context)."),
    cpu: bool = typer.Option(False, "--cpu", help="With --fit: plan one process on the CPU; --fit is its RAM in GB."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="With --fit: bf16 (autocast; the GPU default) or fp32 "
                                                              "(the --cpu default: a CPU without bf16 in hardware)."),
    gpu: Optional[str] = typer.Option(None, "--gpu", metavar="NAME",
                                      help="With --fit: the GPU whose spec-sheet bf16 peak times the training "
                                           "(default H100; e.g. A100, L4, H100 PCIe)."),
    mfu: Optional[float] = typer.Option(None, "--mfu", help="With --fit: the model FLOPs utilisation assumed for the "
                                                            "time (default 0.4 on a GPU, 0.5 with --cpu)."),
) -> None:
    """List model presets with exact parameter counts and memory needs (nothing is allocated; --fit --cpu times
    one matmul of this CPU)."""
    from codette.model.presets import PRESETS, MemoryEstimate, preset_config

    if fit is not None:
        targets = [t.strip() for t in lora_targets.split(",") if t.strip()] if lora_targets else None
        _presets_fit(fit, gpus, block_style, json_out, model=model, lora_rank=lora_rank, lora_targets=targets,
                     dtype=dtype or ("fp32" if cpu else "bf16"), seq_len=seq_len, cpu=cpu, gpu=gpu, mfu=mfu)
        return
    extra = [name for name, value in (("--model", model), ("--lora-rank", lora_rank), ("--lora-targets", lora_targets),
                                      ("--seq-len", seq_len), ("--cpu", cpu), ("--dtype", dtype), ("--gpu", gpu),
                                      ("--mfu", mfu is not None)) if value]
    if extra:
        raise CodetteError(f"{extra[0]} plans a training run: it needs --fit GB")
    rows = []
    for name, p in PRESETS.items():
        cfg = preset_config(name, block_style=block_style)
        mem = MemoryEstimate.of(cfg)
        rows.append({"preset": name, "params": mem.params, "d_model": cfg.d_model, "n_layers": cfg.n_layers,
                     "n_heads": cfg.n_heads, "vocab_size": cfg.vocab_size, "max_seq_len": cfg.max_seq_len,
                     "train_bytes": mem.train_bytes, "gguf_f16_bytes": mem.gguf_f16_bytes, "note": p.note})
    if json_out:
        console.print_json(json.dumps(rows))
        return
    table = Table(title=f"Codette presets ({block_style} blocks)")
    for col in ("preset", "parameters", "layers x d", "heads", "vocab", "train state", "GGUF F16"):
        table.add_column(col, no_wrap=True)
    for r in rows:
        table.add_row(r["preset"], f"{r['params']:,}", f"{r['n_layers']} x {r['d_model']}", str(r["n_heads"]),
                      f"{r['vocab_size']:,}", _gb(r["train_bytes"]), _gb(r["gguf_f16_bytes"]))
    console.print(table)
    console.print("train state = fp32 weights + gradients + two AdamW moments (16 B/param), with or without bf16\n"
                  "autocast (it changes the compute, not the stored state). Activations are not included.\n"
                  "One process trains on a CPU or one GPU; torchrun runs DDP or FSDP2 over several (docs/SCALING.md).")


def _presets_fit(gpu_gb: float, gpus: int, block_style: str, json_out: bool, model: Path | None = None,
                 lora_rank: int = 0, lora_targets: list[str] | None = None, dtype: str = "bf16",
                 seq_len: int | None = None, cpu: bool = False, gpu: str | None = None,
                 mfu: float | None = None) -> None:
    from codette.model.flops import GPU_BF16_PEAK, gpu_bf16_peak, matmul_peak
    from codette.model.memory import USABLE_FRACTION, fit_rows

    if dtype not in ("bf16", "fp32"):
        raise CodetteError(f"--dtype must be bf16 or fp32, got {dtype!r}")
    if lora_targets is not None and not lora_rank:
        raise CodetteError("--lora-targets needs --lora-rank")
    if cpu and gpus != 1:
        raise CodetteError("--cpu plans one process; --gpus does not apply")
    if seq_len is not None and seq_len < 64:
        raise CodetteError(f"--seq-len must be at least 64 tokens, got {seq_len}")
    if cpu and gpu is not None:
        raise CodetteError("--cpu times this machine's CPU; --gpu does not apply")
    mfu = mfu if mfu is not None else (0.5 if cpu else 0.4)
    if not 0 < mfu <= 1:
        raise CodetteError(f"--mfu must be a fraction in (0, 1], got {mfu:g}")
    gpu = gpu or "H100"
    if not cpu and gpu_bf16_peak(gpu) is None:
        raise CodetteError(f"--gpu {gpu!r}: no spec-sheet peak for it; known: {', '.join(k for k, _ in GPU_BF16_PEAK)}")
    cfg = None
    if model is not None:
        from codette.checkpoint.hf import CONFIG_JSON, read_hf_config

        if model.is_file() and model.name != CONFIG_JSON:
            raise CodetteError(f"--model {model}: expected a Hugging Face model folder or its {CONFIG_JSON}")
        cfg = read_hf_config(model.parent if model.is_file() else model)
    # The time's assumption: a peak (this CPU's, measured now; or the GPU's spec sheet, bf16 only) times the MFU.
    if cpu:
        peak: float | None = matmul_peak("cpu", dtype, reps=3)
        peak_source = f"this CPU's {dtype} 2048 x 2048 matmul, best of 3, measured now"
    else:
        peak = gpu_bf16_peak(gpu) if dtype == "bf16" else None
        peak_source = f"{gpu}'s spec-sheet dense bf16 peak" if peak else "none (spec-sheet peaks are bf16 only)"
    try:
        rows = fit_rows(gpu_gb, gpus, dtype, block_style, model=cfg, lora_rank=lora_rank, lora_targets=lora_targets,
                        seq_len=seq_len, achieved_flops=peak * mfu if peak else None)
    except ValueError as exc:
        raise CodetteError(str(exc)) from None
    for r in rows:
        r.update(peak_flops=peak, peak_source=peak_source, mfu=mfu)
    if json_out:
        console.print_json(json.dumps(rows))
        return
    what = "model" if cfg is not None else "preset"
    where = f"the CPU with {gpu_gb:g} GB of memory ({dtype})" if cpu else \
        f"{gpus} x {gpu_gb:g} GB GPU{'s' if gpus > 1 else ''} ({dtype}, per GPU)"
    table = Table(title=f"Training on {where}")
    for col in (what, "mode", "train", "fp32 weights", "grads", "AdamW", "weight copies", "act/seq", "act/seq ckpt",
                "fits", "fits ckpt"):
        table.add_column(col, no_wrap=True)
    for r in rows:
        fits = f"{r['batch']} x {r['seq_len']}" if r["batch"] else "no"
        fits_ckpt = f"{r['batch_checkpointed']} x {r['seq_len_checkpointed']}" if r["batch_checkpointed"] else "no"
        train = f"LoRA r{r['lora_rank']} ({r['trainable']:,})" if r["lora_rank"] else "full"
        table.add_row(r["preset"], r["mode"], train, _gb(r["weights"]), _gb(r["grads"]), _gb(r["adamw"]),
                      _gb(r["weight_copies"]), _gb(r["act_per_seq"]), _gb(r["act_per_seq_checkpointed"]), fits,
                      fits_ckpt)
    console.print(table)
    fitting = [r for r in rows if r["batch"]]
    if cfg is None and fitting:
        best = max(fitting, key=lambda r: (r["params"], r["batch"] * r["seq_len"]))
        console.print(f"largest preset that fits: {best['preset']} ({best['mode']}, micro-batch {best['batch']} x "
                      f"{best['seq_len']} tokens per GPU)")
    elif cfg is None:
        console.print("no preset fits, not even at batch 1 x 64 tokens")
    if lora_rank:
        console.print("train: full fine-tuning, or LoRA adapters of that rank (trainable parameters); with LoRA the "
                      "base weights stay (fp32) but have no gradients or AdamW moments.")
    console.print(f"fits: the largest micro-batch x sequence length within {USABLE_FRACTION:.0%} of "
                  f"{'the memory' if cpu else 'each GPU'} (GB = 2^30 bytes); act/seq: one sequence of the {what}'s "
                  f"context{f' (at most {seq_len} tokens)' if seq_len else ''}.\n"
                  f"ckpt: with activation checkpointing (codette train --activation-checkpointing). Formulas: codette.model.memory.")
    if peak:
        machine = f"this CPU, {dtype}" if cpu else f"{gpus} x {gpu}, {dtype}"
        times = Table(title=f"Training time ({machine}), estimated from FLOPs, not measured")
        for col in (what, "mode", "train", "GFLOP/token", "tokens/s", "hours per 100M tokens"):
            times.add_column(col, no_wrap=True)
        for r in rows:
            train = f"LoRA r{r['lora_rank']}" if r["lora_rank"] else "full"
            rate, hours = r["tokens_per_s"], r["hours_per_100m_tokens"]
            times.add_row(r["preset"], r["mode"], train, f"{r['flops_per_token'] / 1e9:,.3g}",
                          f"{rate:,.0f}" if rate >= 100 else f"{rate:.1f}",
                          f"{hours:,.0f}" if hours >= 100 else f"{hours:.3g}")
        console.print(times)

        shown = f"{peak / 1e12:,.4g} TFLOP/s" if peak >= 1e12 else f"{peak / 1e9:,.4g} GFLOP/s"
        many = f" x {gpus} GPUs (communication not counted)" if gpus > 1 else ""
        console.print(f"tokens/s = peak x MFU{many} / training FLOPs per token = {shown} x {mfu:.0%} / GFLOP/token. "
                      f"Peak: {peak_source}{'' if cpu else ' (--gpu)'}; MFU: assumed (--mfu). FLOPs per token: "
                      f"6N + 12·L·T·d_attn, LoRA 4N + 6N_lora + 12·L·T·d_attn (T the planned window; "
                      f"codette.model.flops). Without activation checkpointing, which recomputes each block's "
                      f"forward (about a third more time for full, a half more for LoRA).")
    else:
        console.print("time: not estimated, the GPU peaks known here are bf16 ones (plan --dtype bf16 for a time).")


@app.command()
def quickstart(
    config: Optional[Path] = ConfigOpt,
    out_dir: Optional[str] = OutOpt,
    max_steps: Optional[int] = typer.Option(None, help="Chat-stage training steps (quickstart default 800; the copy "
                                                  "stage before it: copy_stage.steps)."),
    recipe: str = typer.Option("quickstart", "--recipe", help="quickstart (20 to 30 minutes on 2 cores) or long "
                                                              "(the same stages, about 2.4 times the tokens)."),
) -> None:
    """Every stage on the CPU: data, tokenizer, train, eval, sample chats, an F16 GGUF."""
    if recipe not in RECIPES:
        raise CodetteError(f"--recipe: expected {' or '.join(RECIPES)}, got {recipe!r}")
    overrides = {"out_dir": out_dir, "train.max_steps": max_steps}
    cfg = RECIPES[recipe].build(config, {k: v for k, v in overrides.items() if v is not None})
    stages.run_quickstart(cfg, console, RECIPES[recipe])


def main() -> None:
    """Console-script entry point: turn user errors into one clear line."""
    logging.basicConfig(level=logging.INFO, format="%(message)s",
                        handlers=[RichHandler(console=err_console, show_path=False)])
    # The HTTP client logs every request at INFO; in a chat those lines land in the middle of a reply.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        app()
    except TrainingInterrupted as exc:
        err_console.print(f"[yellow]{escape(str(exc))}[/]")
        sys.exit(130)
    except CodetteError as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]")
        sys.exit(130)


@app.command()
def export(
    checkpoint: Path = typer.Argument(..., help="A run folder (its model_best.pt, ...) or a model_*.pt checkpoint "
                                                "(tokenizer files beside it)."),
    fmt: str = typer.Option("gguf", "--format", "-f", help="gguf (llama.cpp, Ollama) or hf (Hugging Face)."),
    quant: Optional[str] = typer.Option(None, "--quant", "-q",
                                        help="gguf: f32, f16, bf16, q8_0, q4_0 (default f16), or the K-quants "
                                             "q4_k_m, q5_k_m, q6_k (llama.cpp's quantizer; d_model and FFN width "
                                             "multiples of 256); hf: f32, f16, bf16."),
    out_dir: Optional[Path] = typer.Option(None, "--out-dir", "-o", help="Output folder (default: the checkpoint's)."),
    force: bool = typer.Option(False, "--force", help="Overwrite existing output files."),
    arch: Optional[str] = typer.Option(None, help="GGUF architecture (default: llama or starcoder2 by block style, "
                                                 "qwen2 for q/k/v biases)."),
    modelfile: bool = typer.Option(True, "--modelfile/--no-modelfile",
                                   help="Also write an Ollama Modelfile (Modelfile.<quant> when the folder's "
                                        "Modelfile is another GGUF's)."),
) -> None:
    """Export a checkpoint to GGUF (+ Ollama Modelfile) or a Hugging Face folder."""
    stages.run_export(checkpoint, console, fmt=fmt, quant=quant, out_dir=out_dir, force=force, arch=arch,
                      modelfile=modelfile)


@app.command()
def inspect(
    path: Path = typer.Argument(..., help="A .gguf file."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """Show a GGUF file's metadata and tensor table."""
    stages.run_inspect(path, console, json_out=json_out)


@app.command()
def report(
    run_dir: Path = typer.Argument(..., help="A run folder (e.g. codette_model/), a training log folder or one "
                                             "metrics_*.jsonl file."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (default: RUN_DIR/report/)."),
    tensorboard: bool = typer.Option(False, "--tensorboard", help="Also write TensorBoard event files."),
) -> None:
    """PNG plots of a training run and a one-page HTML summary (plus eval.json's figures when present)."""
    stages.run_report(run_dir, console, out_dir=out, tensorboard=tensorboard)


ModelArg = typer.Argument("codette", help="A run folder, .pt checkpoint, .gguf, http(s):// URL of an OpenAI-compatible "
                                          "server, or an Ollama model name (default: the quickstart's codette_model/).")
ToolsOpt = typer.Option(None, "--tools", help="Tools to offer: on (default: all but execute_python), off, or NAME,NAME.")
PythonOpt = typer.Option(False, "--python", help="Also offer execute_python (runs model-written code).")
ServeWorkspaceOpt = typer.Option(None, "--workspace", "-w", help="Folder the agent's tools work in (default: a "
                                                                "temporary one, removed when the server stops).")
DeviceOpt = typer.Option("cpu", "--device", help="cpu, cuda or mps (checkpoints only).")


def _flag(declaration: Any) -> Any:
    """A dataclass field that carries its command-line declaration (a typer Argument or Option)."""
    return field(metadata={"flag": declaration})


@dataclass(frozen=True)
class AgentOptions:
    """The options `chat` and `ask` share, declared once so the two verbs cannot drift apart: each field
    is one flag (:func:`agent_verb` hands them to typer)."""

    model: str = _flag(ModelArg)
    tools: Optional[str] = _flag(ToolsOpt)
    python: bool = _flag(PythonOpt)
    workspace: Optional[Path] = _flag(typer.Option(None, "--workspace", "-w", help="Folder the tools work in, and "
                                                                                   "may not leave (default: the "
                                                                                   "current folder)."))
    max_new_tokens: int = _flag(typer.Option(256, "--max-new-tokens", help="Longest reply per model call."))
    temperature: float = _flag(typer.Option(0.0, "--temperature", help="0 for greedy decoding."))
    max_rounds: int = _flag(typer.Option(5, "--max-rounds", help="Tool rounds per message."))
    device: str = _flag(DeviceOpt)
    raw: bool = _flag(typer.Option(False, "--raw", help="Show the model's control markers (<consciousness>, "
                                                        "<perspective> KEY) instead of hiding them."))
    json_schema: Optional[Path] = _flag(typer.Option(None, "--json-schema", metavar="FILE",
                                                     help="Answer as JSON following this JSON schema (decoding "
                                                          "is held to it on a checkpoint or GGUF)."))


def agent_verb(verb: Callable[..., None]) -> Callable[..., None]:
    """``verb`` with :class:`AgentOptions`' flags in place of its ``AgentOptions`` parameter.

    typer reads a command's flags from its signature, so the returned function's signature lists the
    fields one by one (where that parameter stood); called, it gathers them into one AgentOptions,
    checks its ``--device`` and passes it on.
    """
    hints = get_type_hints(AgentOptions)
    shared = [Parameter(f.name, Parameter.KEYWORD_ONLY, default=f.metadata["flag"], annotation=hints[f.name])
              for f in fields(AgentOptions)]
    own = list(signature(verb, eval_str=True).parameters.values())
    (slot,) = [i for i, p in enumerate(own) if p.annotation is AgentOptions]
    # All keyword-only, as typer passes them: then a parameter without a default may follow one with a default.
    params = [p.replace(kind=Parameter.KEYWORD_ONLY) for p in own[:slot] + shared + own[slot + 1:]]

    @functools.wraps(verb)
    def run(**flags: Any) -> None:
        options = AgentOptions(**{p.name: flags.pop(p.name) for p in shared})
        _check_device(options.device)
        verb(**{own[slot].name: options}, **flags)

    run.__signature__ = Signature(params)  # type: ignore[attr-defined]
    run.__annotations__ = {p.name: p.annotation for p in params}
    return run


@app.command()
@agent_verb
def chat(options: AgentOptions) -> None:
    """Chat with Codette in the terminal: streamed replies, tool calls as they run, /help for commands."""
    from codette.cli.chat import ChatSession, confirm_in_terminal, make_agent

    with make_agent(options, confirm=confirm_in_terminal()) as agent:
        ChatSession(agent, raw=options.raw).run()


@app.command()
@agent_verb
def ask(
    prompt: str = typer.Argument(..., help="The message for Codette."),
    *,
    options: AgentOptions,  # the shared flags, after PROMPT (agent_verb)
    json_out: bool = typer.Option(False, "--json", help="Print the whole Response (text, tool calls, metrics) as JSON."),
    image: Optional[list[Path]] = typer.Option(None, "--image", "-i", help="An image to analyse first (repeatable)."),
    perspective: Optional[list[str]] = typer.Option(None, "--perspective", "-p", help="Answer from this perspective "
                                                                                      "(repeatable)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Let tools change files in the workspace (write_file, "
                                                        "execute_python); without it such calls are refused."),
) -> None:
    """Ask Codette one question (tools run as the model calls them); --json prints the Response."""
    from codette.cli.chat import make_agent, refuse_without_yes, run_ask

    with make_agent(options, confirm=None if yes else refuse_without_yes) as agent:
        run_ask(agent, prompt, json_out, list(image or []), list(perspective or []), raw=options.raw)


@app.command()
def serve(
    model: str = ModelArg,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0: every interface)."),
    port: int = typer.Option(8080, "--port", help="TCP port."),
    api_key: Optional[str] = typer.Option(None, "--api-key", envvar="CODETTE_API_KEY",
                                          help="Require 'Authorization: Bearer KEY' on the API routes (/v1, /api, "
                                               "/tokenize, /metrics; env CODETTE_API_KEY)."),
    tools: Optional[str] = ToolsOpt,
    python: bool = PythonOpt,
    workspace: Optional[Path] = ServeWorkspaceOpt,
    allow_host: Optional[list[str]] = typer.Option(None, "--allow-host", help="Another Host name to accept "
                                                                              "(repeatable)."),
    allow_origin: Optional[list[str]] = typer.Option(None, "--allow-origin", help="A web page origin that may call "
                                                                                  "the API, e.g. http://localhost:3000 "
                                                                                  "(repeatable)."),
    max_queue: int = typer.Option(8, "--max-queue", help="Requests that may wait for the model; more get a 503."),
    timeout: float = typer.Option(300.0, "--timeout", help="Deadline of each request in seconds."),
    max_tokens: int = typer.Option(512, "--max-tokens", help="Reply limit when a request sets none."),
    ctx_size: Optional[int] = typer.Option(None, "--ctx-size", help="Context in tokens (prompt and reply), when "
                                                                    "smaller than the model's."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for generation (GGUF: llama.cpp's; "
                                                                  "checkpoint: torch's)."),
    model_alias: Optional[str] = typer.Option(None, "--model-alias", help="The model name clients see and send "
                                                                          "(/v1/models, /api/tags)."),
    metrics: bool = typer.Option(False, "--metrics", help="Serve Prometheus metrics at /metrics."),
    device: str = DeviceOpt,
) -> None:
    """Serve a model over HTTP: OpenAI's API (/v1), Ollama's API (/api), Codette's agent, and a chat page at /."""
    from codette.cli.chat import parse_tools
    from codette.serve import ServeConfig, serve as run_server

    _check_device(device)
    cfg = ServeConfig(host=host, workspace=workspace, enable_python=python, agent_tools=parse_tools(tools),
                      api_key=api_key,
                      allow_hosts=list(allow_host or []), allow_origins=list(allow_origin or []),
                      max_queue=max_queue, timeout_s=timeout, max_tokens=max_tokens, ctx_size=ctx_size,
                      threads=threads, model_alias=model_alias, metrics=metrics)
    run_server(model, port, cfg, device=device)
