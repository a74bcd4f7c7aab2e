"""Configuration: dataclasses, loadable from TOML/YAML/JSON, overridable by flags, strictly checked.

An unknown key or a value of the wrong type is an error that names the key (``train.lr``), so a
typo in a config file never silently falls back to a default.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TypeVar

import yaml

from codette.errors import CodetteError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

T = TypeVar("T")


@dataclass
class ToolMixConfig:
    """The mixture inside the synthetic tool conversations, all in one place (as nanochat's chat_sft
    ``TaskMixture`` lists its tasks). Each value is a share of the tool conversations; the defaults are
    the shares the data has always had, so a seed still gives the same data. ``[data.tool_mix]`` in a
    config file changes them.
    """

    # What kind of conversation; the rest (50%) make one call, the tools drawn evenly.
    no_tool: float = 0.08  # a question that needs no tool, asked while tools are offered
    chain: float = 0.12  # two calls, the second carrying a value from the first result
    drill: float = 0.30  # 3 to 5 unrelated requests in a row, a call each
    call_error: float = 0.17  # of the calls: one that fails (missing file, bad column...), answered with why
    # Which tool list the conversation shows; the rest (10%) show one or two tools.
    default_list: float = 0.55  # the agent's default tools, in the tool table's order
    all_list: float = 0.15  # all eleven (execute_python switched on)
    few_list: float = 0.20  # a client's one to four tools, shuffled
    reworded: float = 0.15  # of the lists: descriptions worded as another client words them

    def __post_init__(self) -> None:
        check_fields(self, "data.tool_mix")
        for group in (("no_tool", "chain", "drill"), ("default_list", "all_list", "few_list")):
            total = sum(getattr(self, name) for name in group)
            if total > 1 + 1e-9:
                keys = " + ".join(f"'data.tool_mix.{name}'" for name in group)
                raise CodetteError(f"config keys {keys} sum to {total:g}; they must be at most 1")


@dataclass
class DataConfig:
    samples: int = 5000  # synthetic conversations to generate
    seed: int = 0
    val_fraction: float = 0.1  # held out to evaluate during training and pick model_best.pt
    test_fraction: float = 0.1  # held out for `codette eval` only: never read by training or selection
    sources: list[str] = field(default_factory=list)  # the user's own .txt/.jsonl files or folders
    synthetic: bool = True  # include the generated Codette conversations
    assistant_only_loss: bool = True  # chat data: learn only the assistant's tokens
    errors: str = "strict"  # how to treat invalid UTF-8 in user files: strict | replace
    skip_bad: bool = False  # count and skip bad JSONL lines / dataset rows instead of failing
    mix: dict = field(default_factory=dict)  # source (or "synthetic") -> ratio of the final dataset; sums to 1
    copy_docs: int = 0  # copy documents (codette.data.copydocs) added to the data; with a mix, its "copy" ratio
    copy_repeat: float = 0.0  # of the copy documents: repeat documents (lines of fresh values written twice)
    shares: dict = field(default_factory=dict)  # synthetic category -> share; empty: the built-in shares
    tool_mix: ToolMixConfig = field(default_factory=ToolMixConfig)  # inside the tool category

    def __post_init__(self) -> None:
        check_fields(self, "data")
        if self.val_fraction + self.test_fraction >= 1:
            raise CodetteError(f"config keys 'data.val_fraction' + 'data.test_fraction' sum to "
                               f"{self.val_fraction + self.test_fraction:g}; they must leave a share for training")


# The projections of Codette's blocks (codette.model.transformer) that LoRA adapters may wrap (train.lora_targets):
# attention's q/k/v/o and the MLP's (gate_proj only in llama blocks, whose MLP is SwiGLU).
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# How training windows are cut (train.packing; codette.data.loader.BatchSampler and BestFitSampler).
PACKINGS = ("stream", "bestfit")
# The pre-tokenizers of codette.tokenizer.bpe (named here too, so a config is checked without loading it):
# gpt2 is GPT-2's regex; gpt2-digits also splits every digit off.
PRE_TOKENIZERS = ("gpt2", "gpt2-digits")


@dataclass
class TokenizerConfig:
    vocab_size: int = 32768  # before padding the embedding table to a multiple of 64
    min_frequency: int = 2
    pre_tokenizer: str = "gpt2"  # one of PRE_TOKENIZERS

    def __post_init__(self) -> None:
        check_fields(self, "tokenizer")


@dataclass
class ModelSection:
    """A preset plus optional overrides of its fields."""

    preset: str = "tiny"
    block_style: str | None = None
    d_model: int | None = None
    n_layers: int | None = None
    n_heads: int | None = None
    n_kv_heads: int | None = None
    d_ff: int | None = None
    max_seq_len: int | None = None
    dropout: float | None = None

    def __post_init__(self) -> None:
        check_fields(self, "model")


@dataclass
class TrainConfig:
    lr: float = 1e-4
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 100
    max_steps: int = 5000
    eval_every: int = 500
    save_every: int = 1000
    max_grad_norm: float = 1.0
    batch_size: int = 8
    grad_accum: int = 1
    seq_len: int | None = None  # None: the model's max_seq_len
    # How training windows are cut (codette.data.loader): stream, a window from every document start into the
    # documents after it; bestfit, whole documents packed into each window, every token read once an epoch.
    packing: str = "stream"  # one of PACKINGS
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    seed: int = 1337
    device: str = "auto"  # auto | cpu | cuda | mps
    dtype: str = "auto"  # auto (bf16 autocast where the GPU/CPU has bf16 in hardware, else fp32) | fp32 | bf16
    eval_batches: int = 50  # at most this many val batches per evaluation
    log_every: int = 10
    keep_checkpoints: int = 3  # periodic model_step_N.pt files kept
    compile: bool = False  # torch.compile each transformer block (checkpoint keys stay plain)
    activation_checkpointing: bool = False  # recompute block activations in the backward pass (less memory)
    threads: int = 0  # torch CPU threads; 0 leaves torch's default
    best_metric: str = "val_loss"  # model_best.pt by: val_loss | perplexity | token_accuracy | a behavioral metric
    probes: int = 8  # behavioral probes per kind at each evaluation (0: none); see codette.evaluate.training
    probe_budget: float = 0.10  # probes may take at most this fraction of the training time
    copy_monitor: int = 16  # val records the copy monitor scores at each evaluation (0: off); codette.evaluate.copying
    tensorboard: bool = False  # also write TensorBoard events to <log_dir>/tensorboard/
    parallel: str = "auto"  # under torchrun: ddp | fsdp (FSDP2, sharded) | auto (fsdp from 500M parameters)
    init_from: str | None = None  # weights of this checkpoint or run folder; new optimizer and schedule at step 0
    # LoRA (peft, docs/FINETUNE.md): rank-R adapters on init_from's frozen weights; 0 trains every weight.
    lora_rank: int = 0
    lora_alpha: float | None = None  # the adapters' scale is lora_alpha / lora_rank; None: 2 x lora_rank
    lora_targets: list[str] | None = None  # projections that get adapters (LORA_TARGETS); None: all the model has

    def __post_init__(self) -> None:
        check_fields(self, "train")
        if not self.lora_rank:
            for name in ("lora_alpha", "lora_targets"):
                if getattr(self, name) is not None:
                    raise CodetteError(f"config key 'train.{name}' is set but 'train.lora_rank' is 0 (LoRA off); "
                                       f"set a rank or remove it")
        elif not self.init_from:
            raise CodetteError("config key 'train.lora_rank': LoRA trains adapters on a base model's frozen weights; "
                               "name it with 'train.init_from' (--init-from)")

    @property
    def lora_alpha_value(self) -> float:
        """The effective ``lora_alpha`` (its default is twice the rank)."""
        return float(self.lora_alpha) if self.lora_alpha is not None else 2.0 * self.lora_rank


# Where the copy stage's run lives, inside the chat run's folder (its data, packed tokens, checkpoints, logs).
COPY_STAGE_DIR = "copy_stage"


@dataclass
class CopyStageConfig:
    """``[copy_stage]``: a first training stage on copy documents alone, every token learned, whose final
    weights the chat stage starts from (``train.init_from``). Copying the user's values is learned from
    dense repeats long before chat data alone teaches it (docs/TRAINING_GUIDE.md, "Staged training").
    """

    steps: int = 0  # 0: no copy stage (`codette train`'s default; the quickstart has one)
    documents: int = 2600  # copy documents written for it (codette.data.copydocs), about 1,100 tokens each
    repeat_share: float = 0.0  # of them: repeat documents, an induction warm-up (codette.data.copydocs)
    lr: float | None = None  # None: train.lr

    def __post_init__(self) -> None:
        check_fields(self, "copy_stage")


@dataclass
class RunConfig:
    out_dir: str = "codette_model"
    log_dir: str | None = None  # None: <out_dir>/training_logs, beside the run's checkpoints
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelSection = field(default_factory=ModelSection)
    train: TrainConfig = field(default_factory=TrainConfig)
    copy_stage: CopyStageConfig = field(default_factory=CopyStageConfig)

    def __post_init__(self) -> None:
        if not isinstance(self.out_dir, str) or not self.out_dir.strip():
            raise CodetteError(f"config key 'out_dir': expected a folder name, got {self.out_dir!r}")
        if not self.log_dir:  # the one place the log folder's default is decided
            self.log_dir = str(Path(self.out_dir) / "training_logs")


# What each field accepts besides its type: (test, what is expected). Checked whenever a config is built
# (from flags, a config file or code), so a flag and a config file get the same one-line error.
Rule = tuple[Callable[[Any], bool], str]


def _int_at_least(low: int) -> Rule:
    return (lambda v: v >= low, f"an integer >= {low}")


def _real(low: float, high: float = math.inf, low_open: bool = False, high_open: bool = True) -> Rule:
    def ok(v: float) -> bool:
        return math.isfinite(v) and (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
    left, right = "(" if low_open else "[", ")" if high_open else "]"
    text = f"a finite number > {low:g}" if high == math.inf and low_open else \
        f"a finite number >= {low:g}" if high == math.inf else f"a number in {left}{low:g}, {high:g}{right}"
    return ok, text


def _optional(rule: Rule, none_means: str) -> Rule:
    test, text = rule
    return (lambda v: v is None or test(v)), f"{text} or none ({none_means})"


def _one_of(*choices: str) -> Rule:
    return (lambda v: v in choices), " | ".join(choices)


_POSITIVE = _int_at_least(1)
_PRESET_VALUE = "the preset's value"
RULES: dict[str, dict[str, Rule]] = {
    "data": {"samples": _int_at_least(0), "seed": _int_at_least(0), "copy_docs": _int_at_least(0),
             "copy_repeat": _real(0.0, 1.0, high_open=False),
             "val_fraction": _real(0.0, 1.0, low_open=True),
             "test_fraction": _real(0.0, 1.0, low_open=True),
             "errors": _one_of("strict", "replace")},
    "data.tool_mix": {f.name: _real(0.0, 1.0, high_open=False) for f in dataclasses.fields(ToolMixConfig)},
    "tokenizer": {"vocab_size": _POSITIVE, "min_frequency": _int_at_least(0),
                  "pre_tokenizer": _one_of(*PRE_TOKENIZERS)},
    "model": {**{k: _optional(_POSITIVE, _PRESET_VALUE)
                 for k in ("d_model", "n_layers", "n_heads", "n_kv_heads", "d_ff", "max_seq_len")},
              "dropout": _optional(_real(0.0, 1.0), _PRESET_VALUE)},
    "train": {
        "lr": _real(0.0, low_open=True), "min_lr_ratio": _real(0.0, 1.0, high_open=False),
        "warmup_steps": _int_at_least(0), "max_steps": _POSITIVE, "eval_every": _POSITIVE, "save_every": _POSITIVE,
        "max_grad_norm": _real(0.0, low_open=True), "batch_size": _POSITIVE, "grad_accum": _POSITIVE,
        "seq_len": _optional(_POSITIVE, "the model's context"), "packing": _one_of(*PACKINGS),
        "weight_decay": _real(0.0),
        "beta1": _real(0.0, 1.0), "beta2": _real(0.0, 1.0), "seed": _int_at_least(0),
        "dtype": _one_of("auto", "fp32", "bf16"), "eval_batches": _POSITIVE, "log_every": _POSITIVE,
        "keep_checkpoints": _int_at_least(0), "threads": _int_at_least(0), "probes": _int_at_least(0),
        "probe_budget": _real(0.0, 1.0, high_open=False), "copy_monitor": _int_at_least(0),
        "parallel": _one_of("auto", "ddp", "fsdp"),
        "init_from": _optional((lambda v: bool(v.strip()) and not v.strip().endswith(".gguf"),
                                "a checkpoint (.pt, .dcp) or a run folder"), "the seeded initial weights"),
        "lora_rank": _int_at_least(0),
        "lora_alpha": _optional(_real(0.0, low_open=True), "2 x train.lora_rank"),
        "lora_targets": _optional((lambda v: bool(v) and len(set(v)) == len(v) and set(v) <= set(LORA_TARGETS),
                                   f"distinct names from {', '.join(LORA_TARGETS)}"), "every one the model has"),
    },
    "copy_stage": {"steps": _int_at_least(0), "documents": _POSITIVE, "repeat_share": _real(0.0, 1.0, high_open=False),
                   "lr": _optional(_real(0.0, low_open=True), "train.lr")},
}


def check_fields(obj: Any, section: str) -> None:
    """Raise a CodetteError naming ``section.field`` for the first value its rule refuses."""
    for name, (test, expected) in RULES[section].items():
        value = getattr(obj, name)
        try:
            good = bool(test(value))
        except TypeError:  # a value of the wrong type built in code (from_dict checks types first)
            good = False
        if not good:
            raise CodetteError(f"config key '{section}.{name}': expected {expected}, got {value!r}")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except CodetteError:
                pass  # try the next type; the error below names the whole union
        raise CodetteError(f"config key '{key}': expected {_type_name(tp)}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise CodetteError(f"config key '{key}': expected a table/object, got {value!r}")
        return from_dict(tp, value, prefix=f"{key}.")
    if origin is list:
        (item,) = typing.get_args(tp) or (Any,)
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, (list, tuple)):
            raise CodetteError(f"config key '{key}': expected a list, got {value!r}")
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is dict:
        if isinstance(value, dict):
            return value
    raise CodetteError(f"config key '{key}': expected {_type_name(tp)}, got {value!r}")


def from_dict(cls: type[T], data: dict, prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types name the key."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise CodetteError(
            f"unknown config key '{prefix}{unknown[0]}'; valid keys here: {', '.join(sorted(names))}")
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in data.items()}
    return cls(**kwargs)


def to_dict(obj: Any) -> dict:
    return dataclasses.asdict(obj)


def load_config_file(path: Path | str) -> dict:
    """Parse a .toml, .yaml/.yml or .json file into a dict, with the file named in any error."""
    path = Path(path)
    if not path.is_file():
        raise CodetteError(f"config file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text) or {}
        elif path.suffix == ".json":
            data = json.loads(text)
        else:
            raise CodetteError(f"{path}: unsupported config format {path.suffix!r}; use .toml, .yaml or .json")
    except UnicodeDecodeError as exc:
        raise CodetteError(f"{path}: config is not UTF-8 text (invalid byte at position {exc.start})") from None
    except (tomllib.TOMLDecodeError, yaml.YAMLError, json.JSONDecodeError) as exc:
        raise CodetteError(f"{path}: cannot parse config: {exc}") from None
    if not isinstance(data, dict):
        raise CodetteError(f"{path}: the top level must be a table/object")
    return data


def set_dotted(data: dict, dotted: str, value: Any) -> None:
    """``set_dotted(d, "train.lr", 3e-4)`` sets ``d["train"]["lr"]``."""
    *parents, leaf = dotted.split(".")
    node = data
    for p in parents:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise CodetteError(f"config key '{dotted}': '{p}' is not a table")
    node[leaf] = value


def merge(base: dict, top: dict) -> dict:
    """A new dict: ``top`` laid over ``base`` recursively; neither input is modified."""
    out = copy.deepcopy(base)
    for k, v in top.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def build_config(file: Path | str | None = None, overrides: dict[str, Any] | None = None,
                 defaults: dict | None = None) -> RunConfig:
    """Defaults < ``defaults`` dict < config file < ``overrides`` (dotted keys, e.g. from CLI flags)."""
    data: dict = merge({}, defaults or {})
    if file:
        data = merge(data, load_config_file(file))
    for k, v in (overrides or {}).items():
        if v is not None:
            set_dotted(data, k, v)
    return from_dict(RunConfig, data)


@dataclass(frozen=True)
class Recipe:
    """A named set of config values laid over the defaults (a config file and flags still override it)."""

    name: str
    config: dict  # nested like a config file: {"train": {"lr": ...}}
    eval_probes: int  # behavioral probes per kind in the recipe's final evaluation

    def build(self, file: Path | str | None = None, overrides: dict[str, Any] | None = None) -> RunConfig:
        """Defaults < this recipe < config file < ``overrides``."""
        return build_config(file, overrides, defaults=self.config)


def copy_stage_config(cfg: RunConfig) -> RunConfig:
    """The copy stage's own run: ``<out_dir>/copy_stage``, copy documents only (a seed apart from the chat
    data's, so the replayed ones are other documents), ``copy_stage.steps`` steps, checked on its val loss and
    the copy monitor over its val documents (no chat probes: it has no conversations), one checkpoint at the end."""
    stage = cfg.copy_stage
    out = Path(cfg.out_dir) / COPY_STAGE_DIR
    data = dataclasses.replace(cfg.data, samples=0, synthetic=False, sources=[], mix={}, shares={},
                               copy_docs=stage.documents, copy_repeat=stage.repeat_share, seed=cfg.data.seed + 1,
                               val_fraction=0.04, test_fraction=0.02)
    train = dataclasses.replace(cfg.train, max_steps=stage.steps, lr=stage.lr or cfg.train.lr,
                                warmup_steps=min(cfg.train.warmup_steps, stage.steps),
                                eval_every=min(cfg.train.eval_every, stage.steps), save_every=stage.steps,
                                best_metric="val_loss", probes=0, init_from=None, lora_rank=0, lora_alpha=None,
                                lora_targets=None)
    return dataclasses.replace(cfg, out_dir=str(out), log_dir=str(out / "training_logs"), data=data, train=train,
                               copy_stage=CopyStageConfig())


# `codette quickstart`: a tiny model, a copy stage, then a chat stage over data read about once.
QUICKSTART = Recipe(
    "quickstart",
    {
        "tokenizer": {"vocab_size": 4096},
        # A 768-token context: the agent's prompt with all ten default tools takes about 280 tokens, and
        # three tool rounds fit after it (docs/AGENT.md).
        "model": {"preset": "tiny", "max_seq_len": 768},
        # 20,000 conversations (the seed's 5,000 is `codette data`'s default) so that the chat stage reads each
        # about once, plus 600 copy documents replayed in it (about 15% of its tokens).
        "data": {"samples": 20000, "copy_docs": 600},
        # The copy stage: 600 steps over 2,600 copy documents, every token learned (docs/TRAINING_GUIDE.md,
        # "Staged training"); the chat stage starts from its weights.
        "copy_stage": {"steps": 600, "documents": 2600},
        # The chat stage: 800 steps x 6 sequences of 768 tokens, whole conversations packed best-fit. lr 3e-3
        # beat 1e-3, 2e-3 and 5e-3 in held-out loss and in calls that return the right result (TRAINING_GUIDE).
        # Measured times, with their CPUs and commits, in docs/RESULTS.md.
        "train": {"lr": 3e-3, "warmup_steps": 30, "max_steps": 800, "eval_every": 200, "save_every": 200,
                  "batch_size": 6, "eval_batches": 25, "log_every": 20, "probe_budget": 0.05,
                  "packing": "bestfit"},
    },
    eval_probes=16,  # about a minute on a laptop CPU
)


# `codette quickstart --recipe long`: the same stages, about 2.4 times the tokens (not yet timed; from the
# quickstart's measured tokens/s, about 50 minutes on the 2-core Xeon of docs/RESULTS.md).
LONG = Recipe(
    "long",
    merge(QUICKSTART.config, {
        "data": {"samples": 40000, "copy_docs": 1200},
        "copy_stage": {"steps": 1500, "documents": 6000},
        "train": {"max_steps": 1800, "eval_every": 300, "save_every": 300},
    }),
    eval_probes=QUICKSTART.eval_probes,
)
RECIPES = {r.name: r for r in (QUICKSTART, LONG)}
