"""Each CLI verb as a function: read the config, call the stage, report. The quickstart chains them.

Output folder layout (``out_dir``, default ``codette_model/``)::

    data/{train,val,test}.jsonl, data/stats.json   conversations (codette data)
    tokenizer.json, tokenizer_config.json          byte-level BPE + chat template (codette tokenizer)
    packed/{train,val,test}.bin/.mask.bin/.json    token memmaps (made on first train)
    model_best.pt, model_step_N.pt, model_final.pt
    run_config.json, eval.json
    training_logs/training_*.log, metrics_*.jsonl  (log_dir; default <out_dir>/training_logs)
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from codette.config import QUICKSTART, Recipe, RunConfig, copy_stage_config, to_dict
from codette.data.split import SPLITS
from codette.errors import CodetteError
from codette.evaluate.probes import DEFAULT_PROBES_PER_KIND, PerKind
from codette.fileio import atomic_open, atomic_write_text, ensure_writable_dir, file_sha256

if TYPE_CHECKING:  # the stages themselves are imported where they run: `codette inspect` needs no torch
    from codette.export.gguf_export import GGUFExport
    from codette.model import ModelConfig
    from codette.tokenizer import CodetteTokenizer
    from codette.train import TrainResult


log = logging.getLogger(__name__)


def _out(cfg: RunConfig) -> Path:
    return ensure_writable_dir(Path(cfg.out_dir))


def model_path(path: Path | str, gguf: bool = True) -> Path:
    """A verb's model argument: a file as it is, a run folder as the model it stands for (its model_best.pt,
    ..., as `codette ask/chat/serve` read it: :func:`codette.checkpoint.model_file`), which is then named."""
    from codette.checkpoint import model_file

    found = model_file(path, gguf)
    if found != Path(path):
        log.info("%s is a run folder: using %s", path, found)
    return found


@contextlib.contextmanager
def stage_progress(console: Console, split: str) -> Iterator[Callable[[str, int, int], None]]:
    """``on_progress(stage, done, total)`` for :mod:`codette.evaluate.run`: one rich bar per long stage
    (:data:`~codette.evaluate.run.STAGES`), added when the stage starts."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from codette.evaluate.run import STAGES

    tasks: dict[str, int] = {}
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as progress:
        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = progress.add_task(STAGES.get(stage, stage).format(split=split), total=total)
            progress.update(tasks[stage], completed=done, total=total)

        yield update


def run_data(cfg: RunConfig, console: Console, card: bool = False) -> dict:
    from codette.data.build import build_dataset
    from codette.data.card import write_card

    out = _out(cfg)
    stats = build_dataset(cfg.data, out / "data")
    table = Table(title=f"Dataset written to {out / 'data'}")
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("train conversations", str(stats.train))
    table.add_row("val conversations (select model_best)", str(stats.val))
    table.add_row("test conversations (codette eval)", str(stats.test))
    if stats.synthetic:
        s = stats.synthetic
        for cat, share in s["shares"].items():
            table.add_row(f"share: {cat}", f"{share:.1%}")
        table.add_row("distinct-sample ratio", f"{s['distinct_ratio']:.3f}")
        table.add_row("combinations in more than one split", str(s["overlap"]))
    if stats.user_documents:
        table.add_row("your documents", str(stats.user_documents))
    if "copy" in stats.sources:
        table.add_row("copy documents (learned on every token)", str(stats.sources["copy"]["used"]))
    if stats.skipped_bad:
        table.add_row("bad lines skipped (--skip-bad)", str(stats.skipped_bad))
    console.print(table)
    if card:
        print_card(write_card(out / "data", out), console)
    result = stats.as_dict()
    if cfg.copy_stage.steps:
        stage = copy_stage_config(cfg)
        copy_stats = build_dataset(stage.data, Path(stage.out_dir) / "data")
        console.print(f"copy stage data: {stage.data.copy_docs:,} copy documents (learned on every token) -> "
                      f"{Path(stage.out_dir) / 'data'} ({copy_stats.train:,} train / {copy_stats.val:,} val)",
                      highlight=False)
        result["copy_stage"] = copy_stats.as_dict()
    return result


def print_card(card: dict, console: Console) -> None:
    """The data card as a table (the full card is in card.json, the charts in card.png)."""
    from codette.data.card import CONTEXT

    table = Table(title="Data card")
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("records (train / val / test)", " / ".join(f"{card['splits'][s]:,}" for s in SPLITS))
    for cat, share in card["shares"].items():
        table.add_row(f"share: {cat}", f"{share:.1%}")
    table.add_row("distinct-sample ratio", f"{card['distinct_ratio']:.3f}")
    length = card["length"]
    table.add_row(f"{card['length_unit']} per sample (mean / p90 / max)",
                  f"{length['mean']:.0f} / {length['p90']:.0f} / {length['max']}")
    if card.get("length_tokenizer") == "provisional":
        table.add_row("counted with", "a provisional BPE (no tokenizer trained yet)")
    if length.get(f"over_{CONTEXT}") is not None:
        table.add_row(f"longer than {CONTEXT} tokens", str(length[f"over_{CONTEXT}"]))
    covered = sum(1 for n in card["tool_coverage"].values() if n)
    table.add_row("tools called", f"{covered} of {len(card['tool_coverage'])}")
    table.add_row("tool calls that fail / no-tool answers", f"{card['tool_errors']} / {card['no_tool_answers']}")
    console.print(table)
    if card.get("network_results"):
        console.print(f"note: {card['network_results']}")
    console.print(f"data card: {', '.join(card['files'])}")


def run_tokenizer(cfg: RunConfig, console: Console) -> CodetteTokenizer:
    from codette.data.build import training_texts
    from codette.model import padded_vocab
    from codette.tokenizer.bpe import TOKENIZER_FILE
    from codette.tokenizer.build import train_tokenizer

    out = _out(cfg)
    model_cfg = _model_config(cfg, vocab_tokens=None)
    base = _hf_base(cfg)
    if base is not None:  # a base model keeps its own tokenizer: its embedding rows mean its tokens
        from codette.tokenizer.hf import load_hf_tokenizer

        hf = load_hf_tokenizer(base, model_max_length=model_cfg.max_seq_len)
        hf.tokenizer.save(out)
        console.print(f"tokenizer: the base model's ({base}), {hf.base_tokens} tokens + {len(hf.added)} special tokens "
                      f"added -> {out / TOKENIZER_FILE}", highlight=False)
        return hf.tokenizer
    tok = train_tokenizer(training_texts(out / "data"), cfg.tokenizer, out, model_max_length=model_cfg.max_seq_len)
    console.print(f"tokenizer: {len(tok)} tokens (embedding rows {padded_vocab(len(tok))}) -> {out / TOKENIZER_FILE}")
    return tok


def _hf_base(cfg: RunConfig) -> Path | None:
    """The Hugging Face model folder ``train.init_from`` names, if it names one."""
    from codette.checkpoint.hf import is_hf_folder

    init = cfg.train.init_from
    return Path(init) if init and is_hf_folder(init) else None


def _model_config(cfg: RunConfig, vocab_tokens: int | None) -> ModelConfig:
    """The model's shape: a preset's with the config's overrides, or a Hugging Face base model's own (its
    vocabulary grown to fit the special tokens added to its tokenizer, its context at most the config's)."""
    from codette.model.presets import resolve_preset

    base = _hf_base(cfg)
    if base is not None:
        from codette.checkpoint.hf import read_hf_config
        from codette.model import padded_vocab

        shape = read_hf_config(base)  # rows as HFTokenizer.embedding_rows counts them: grown only when ids overflow
        fits = vocab_tokens is None or vocab_tokens <= shape.vocab_size
        rows = shape.vocab_size if fits else padded_vocab(vocab_tokens)
        context = min(shape.max_seq_len, cfg.model.max_seq_len or shape.max_seq_len)
        return dataclasses.replace(shape, vocab_size=rows, max_seq_len=context)
    try:
        return resolve_preset(cfg.model.preset, dataclasses.asdict(cfg.model), vocab_tokens)
    except ValueError as exc:
        raise CodetteError(str(exc)) from None


@dataclasses.dataclass
class StagedResult:
    """What the quickstart reports of `codette train`: the chat stage's result, and the copy stage's before it."""

    chat: TrainResult
    copy: TrainResult | None = None

    def figures(self) -> dict:
        """eval.json's training figures: time and speed of the whole run, then of each stage."""
        stages = {"copy": self.copy, "chat": self.chat} if self.copy else {"chat": self.chat}
        seconds = sum(r.train_seconds for r in stages.values())
        tokens = sum(r.train_seconds * r.train_tokens_per_second for r in stages.values())
        out: dict = {"train_seconds": seconds, "train_tokens_per_second": tokens / seconds if seconds else 0.0,
                     "train_steps": sum(r.steps for r in stages.values())}
        if self.copy:
            out["train_stages"] = {name: {"steps": r.steps, "seconds": r.train_seconds,
                                          "tokens_per_second": r.train_tokens_per_second,
                                          "checkpoint": str(r.final_checkpoint)} for name, r in stages.items()}
        return out


def run_train_stages(cfg: RunConfig, console: Console, resume: str | None = None) -> StagedResult:
    """`codette train`: the copy stage first when ``copy_stage.steps`` asks for one (and ``train.init_from``
    does not name other weights), then the chat stage from its final weights."""
    from codette.tokenizer.bpe import CONFIG_FILE, TOKENIZER_FILE
    from codette.train.distributed import world_from_env

    if not world_from_env().main:  # under torchrun every rank trains both stages; rank 0 reports
        console = Console(quiet=True)
    if not cfg.copy_stage.steps:
        return StagedResult(run_train(cfg, console, resume))
    if cfg.train.init_from:
        console.print(f"copy stage skipped: train.init_from names the starting weights ({cfg.train.init_from})",
                      highlight=False)
        return StagedResult(run_train(cfg, console, resume))
    stage = copy_stage_config(cfg)
    stage_dir = Path(stage.out_dir)
    final = stage_dir / "model_final.pt"
    copy_result = None
    if resume and final.is_file():
        console.print(f"copy stage: done before, its weights are {final}", highlight=False)
    else:
        if not (stage_dir / "data" / "train.jsonl").is_file():
            raise CodetteError(f"copy_stage.steps is {cfg.copy_stage.steps} but {stage_dir / 'data'} has no copy "
                               f"documents; run `codette data` with the same config first")
        for name in (TOKENIZER_FILE, CONFIG_FILE):  # one tokenizer for both stages (init_from checks it)
            if (Path(cfg.out_dir) / name).is_file():  # every rank: each has it before it reads it
                with atomic_open(stage_dir / name) as fh:
                    fh.write((Path(cfg.out_dir) / name).read_bytes())
        console.rule(f"train stage 1/2: copy ({cfg.copy_stage.steps} steps, every token of copy documents)",
                     style="dim")
        copy_result = run_train(stage, console, resume="auto" if resume else None)
        final = copy_result.final_checkpoint or final
        console.rule(f"train stage 2/2: chat ({cfg.train.max_steps} steps from the copy stage's weights)",
                     style="dim")
    chat = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, init_from=str(final)))
    return StagedResult(run_train(chat, console, resume), copy_result)


def run_train(cfg: RunConfig, console: Console, resume: str | None = None) -> TrainResult:
    from codette.data.build import ensure_packed
    from codette.evaluate.training import build_monitor
    from codette.tokenizer import CodetteTokenizer
    from codette.tokenizer.bpe import TOKENIZER_FILE
    from codette.train import train
    from codette.train.distributed import world_from_env
    from codette.train.selection import needs_probes

    if not world_from_env().main:  # under torchrun, rank 0 reports for the run
        console = Console(quiet=True)
    out = _out(cfg)
    _model_config(cfg, vocab_tokens=None)  # a bad preset or shape fails before anything is loaded
    if not (out / TOKENIZER_FILE).is_file() and not (out / "data" / "train.jsonl").exists():
        # name the first missing step: `codette tokenizer` would only fail next for want of data
        raise CodetteError(f"nothing to train on in {out}: no data and no tokenizer; run `codette data`, then "
                           f"`codette tokenizer` (with the same --out-dir), then train")
    tok = CodetteTokenizer.load(out)
    model_cfg = _model_config(cfg, vocab_tokens=len(tok))
    packed = ensure_packed(out, tok, cfg.data.assistant_only_loss)
    atomic_write_text(out / "run_config.json", json.dumps(to_dict(cfg), indent=2))
    required = needs_probes(cfg.train.best_metric)  # an unknown metric fails before training starts
    monitor = build_monitor(cfg.train, out / "data", tok, Path(cfg.log_dir), required=required)
    result = train(cfg.train, model_cfg, packed, out, Path(cfg.log_dir), resume=resume, run_config=to_dict(cfg),
                   tokenizer_sha256=file_sha256(out / TOKENIZER_FILE), console=console, monitor=monitor)
    if monitor is not None and monitor.spent:
        console.print(f"behavioral probes took {monitor.spent:.0f} s, {monitor.overhead:.1%} of the training time "
                      f"(budget {cfg.train.probe_budget:.0%})")
    ev = result.last_eval
    if ev:
        console.print(f"step {result.steps}: val_loss {ev['val_loss']:.3f}  token accuracy "
                      f"{ev['token_accuracy']:.1%}  ({result.train_tokens_per_second:,.0f} train tokens/s)")
    console.print(f"checkpoints in {out} (best: {result.best_checkpoint})")
    return result


def run_eval(checkpoint: Path, console: Console, data_dir: Path | None = None, output: Path | None = None,
             max_batches: int | None = None, extra: dict | None = None, probes: PerKind = DEFAULT_PROBES_PER_KIND,
             probe_dir: Path | None = None, markdown: bool = True, split: str = "test", natural: bool = False,
             device: str = "cpu", constrain: bool = True) -> dict:
    """`codette eval` on a checkpoint or a .gguf: eval.json, eval_probes.jsonl (per probe), eval.md.

    ``split`` is the held-out split scored: ``test`` by default, never ``train``. ``natural`` adds the
    hand-written natural-prompt set (eval.json's ``natural``, eval_natural.jsonl per item), its tool calls
    held while decoding unless ``constrain`` is False.
    """
    from codette.evaluate.run import evaluate_path
    from codette.evaluate.summary import console_tables, markdown as render_markdown

    checkpoint = model_path(checkpoint)
    with stage_progress(console, split) as on_progress:
        report = evaluate_path(checkpoint, packed_dir=data_dir, max_batches=max_batches, probe_dir=probe_dir,
                               probes_per_kind=probes, split=split, natural=natural, device=device,
                               on_progress=on_progress, constrain=constrain)
    probe_results = report.pop("probe_results", None)
    natural_results = report.pop("natural_results", None)
    report.update(extra or {})
    output = output or checkpoint.parent / "eval.json"
    atomic_write_text(output, json.dumps(report, indent=2, ensure_ascii=False))
    written = [output]
    if probe_results is not None:
        path = output.with_name(output.stem + "_probes.jsonl")
        atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in probe_results))
        written.append(path)
    if natural_results is not None:
        path = output.with_name(output.stem + "_natural.jsonl")
        atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in natural_results))
        written.append(path)
    if markdown:
        path = output.with_suffix(".md")
        atomic_write_text(path, render_markdown(report, probe_results))
        written.append(path)
    for table in console_tables(report):
        console.print(table)
    from codette.agent.markup import strip_markers

    for chat in report["samples"]:
        # shown as a person meets the reply: control markers out (the verdict names them; eval.json keeps them)
        body = Text("".join(f"[tool] {c['name']} {json.dumps(c['arguments'], ensure_ascii=False)} -> "
                            f"{c['result'][:120]}\n" for c in chat.get("tool_calls", []))
                    + strip_markers(chat["assistant"])[0].strip())
        mark = "right" if chat.get("right") else "wrong"
        console.print(Panel(body, title=Text(f"user: {chat['user']}"), title_align="left",
                            subtitle=Text(f"{mark}: {chat.get('why', '')}"), subtitle_align="left"))
    if not natural:
        console.print("natural-prompt set not run (add --natural: hand-written requests through the agent's tool "
                      "loop, minutes on a CPU)")
    console.print(f"written: {', '.join(map(str, written))}")
    return report


def run_quickstart(cfg: RunConfig, console: Console, recipe: Recipe = QUICKSTART) -> dict:
    """data, tokenizer, train, evaluate, then an F16 GGUF + Modelfile (the quickstart rewrites its own folder)."""
    t0 = time.perf_counter()
    console.rule("1/5 data")
    run_data(cfg, console)
    console.rule("2/5 tokenizer")
    run_tokenizer(cfg, console)
    console.rule("3/5 train" + (" (copy stage, then chat)" if cfg.copy_stage.steps else ""))
    result = run_train_stages(cfg, console)
    console.rule("4/5 evaluate")
    ckpt = result.chat.best_checkpoint or result.chat.final_checkpoint
    report = run_eval(ckpt, console, extra=result.figures(), probes=recipe.eval_probes)
    console.rule("5/5 export")
    exported = run_export(ckpt, console, fmt="gguf", quant="f16", force=True)
    report["gguf"] = str(exported.path)
    report["wall_seconds"] = time.perf_counter() - t0
    atomic_write_text(Path(cfg.out_dir) / "eval.json", json.dumps(report, indent=2, ensure_ascii=False))
    console.print(f"quickstart finished in {report['wall_seconds']:.0f} s. Next:", highlight=False)
    for line in next_steps(Path(cfg.out_dir), exported):
        console.print(Text(f"  {line}"))
    return report


def command(name: str) -> str:
    """How to run ``name`` from this environment's bin folder: the bare name when the shell finds that very
    file (an activated venv), else its path (``.venv/bin/codette`` after ``make quickstart``)."""
    import shutil
    import sys

    exe = Path(sys.executable).parent / name
    found = shutil.which(name)
    if found and Path(found).absolute() == exe.absolute():
        return name
    try:
        return str(exe.absolute().relative_to(Path.cwd()))
    except ValueError:
        return str(exe.absolute())


# llama-cpp-python's server and the packages its `[server]` extra adds (`make install-llama` installs them).
LLAMA_SERVER_MODULES = ("llama_cpp", "uvicorn", "fastapi", "pydantic_settings", "sse_starlette", "starlette_context")


def llama_server_installed() -> bool:
    """Whether `python -m llama_cpp.server` can start here (found without importing anything)."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in LLAMA_SERVER_MODULES)


def next_steps(out_dir: Path, exported: GGUFExport, llama_server: bool | None = None,
               ollama: bool | None = None) -> list[str]:
    """The quickstart's "Next:" commands, each runnable as printed: only what is installed is suggested
    (llama.cpp's server otherwise after the make target that installs it, Ollama only where it is found)."""
    import shutil

    from codette.export.modelfile import ollama_command

    if llama_server is None:
        llama_server = llama_server_installed()
    if ollama is None:
        ollama = shutil.which("ollama") is not None
    codette = command("codette")
    lines = [f'{codette} generate {out_dir} --prompt "Who are you?"',
             f"{codette} chat {out_dir}   (the agent, with tools)",
             f"{codette} serve {out_dir}   (chat page at http://127.0.0.1:8080/, OpenAI API at /v1)"]
    server = f"{command('python')} -m llama_cpp.server --model {exported.path} --n_ctx {exported.context_length}"
    if llama_server:
        lines.append(f"{server}   (llama.cpp's OpenAI-compatible server)")
    else:
        lines.append(f"make install-llama, then {server}   (llama.cpp's server; the make target builds it)")
    if ollama and exported.modelfile:
        lines.append(f"cd {exported.path.parent} && {ollama_command(exported.modelfile.name)}")
    return lines


def run_export(checkpoint: Path, console: Console, fmt: str = "gguf", quant: str | None = None,
               out_dir: Path | None = None, force: bool = False, arch: str | None = None,
               modelfile: bool = True) -> object:
    """`codette export`: GGUF (+ Modelfile) or a Hugging Face folder; the work is in codette.export."""
    from codette.export import DEFAULT_QUANT, export_gguf, export_hf
    from codette.export.modelfile import modelfile_gguf, ollama_command

    checkpoint = model_path(checkpoint, gguf=False)
    fmt = fmt.lower()
    if fmt == "gguf":
        result = export_gguf(checkpoint, out_dir, quant or DEFAULT_QUANT, force=force, arch=arch, modelfile=modelfile)
        console.print(f"GGUF ({result.arch}, {result.quant}): {result.path}  {result.n_bytes / 1e6:,.1f} MB, "
                      f"{result.n_tensors} tensors, {result.mb_per_s:,.0f} MB/s")
        for name in result.fallbacks:
            console.print(f"  {name}: stored as F16 (rows are not whole {result.quant} blocks)")
        if result.modelfile:
            kept = result.modelfile_kept
            note = (f" ({kept} is {modelfile_gguf(kept)}'s and stays as it was)" if kept else "")
            console.print(Text(f"Modelfile: {result.modelfile}{note}\n  cd {result.path.parent} && "
                               f"{ollama_command(result.modelfile.name)}"))
        return result
    if fmt == "hf":
        if arch is not None:
            raise CodetteError("--arch applies to --format gguf only")
        result = export_hf(checkpoint, out_dir, dtype=quant or "f32", force=force)
        console.print(f"Hugging Face folder ({result.architecture}, {result.dtype}): {result.path}")
        return result
    raise CodetteError(f"unknown export format {fmt!r}; choose gguf or hf")


def run_inspect(path: Path, console: Console, json_out: bool = False) -> object:
    """`codette inspect`: a GGUF file's metadata (arrays summarised) and tensor table."""
    from codette.export import read_gguf

    summary = read_gguf(path)
    if json_out:
        console.print_json(json.dumps({
            "path": str(summary.path), "bytes": summary.n_bytes,
            "metadata": [{"key": k, "type": t, "value": v} for k, t, v in summary.metadata],
            "tensors": [dataclasses.asdict(t) for t in summary.tensors]}))
        return summary
    meta = Table(title=f"{summary.path.name}: metadata ({len(summary.metadata)} keys)")
    for col in ("key", "type", "value"):
        meta.add_column(col, overflow="fold")
    for key, vtype, value in summary.metadata:
        meta.add_row(key, vtype, Text(value))
    console.print(meta)
    tensors = Table(title=f"tensors ({len(summary.tensors)}, {summary.tensor_bytes / 1e6:,.2f} MB; "
                          f"file {summary.n_bytes / 1e6:,.2f} MB)")
    for col in ("name", "shape (ggml ne)", "type", "bytes"):
        tensors.add_column(col, justify="right" if col == "bytes" else "left")
    for t in summary.tensors:
        tensors.add_row(t.name, " x ".join(map(str, t.shape)), t.type, f"{t.n_bytes:,}")
    console.print(tensors)
    return summary


def run_report(run_dir: Path, console: Console, out_dir: Path | None = None, tensorboard: bool = False) -> object:
    """`codette report`: plots, report.html and optional TensorBoard events; the work is in codette.report."""
    from codette.report import build_report

    result = build_report(run_dir, out_dir, tensorboard=tensorboard)
    console.print(f"metrics: {', '.join(map(str, result.run.files))}")
    for path in result.plots.values():
        console.print(f"  plot: {path}")
    if result.eval_json is not None:
        console.print(f"  evaluation figures from {result.eval_json}")
    console.print(f"report: {result.html}")
    if result.tensorboard is not None:
        console.print(f"TensorBoard: tensorboard --logdir {result.tensorboard}")
    return result

