"""Hugging Face model folders as Codette weights: ``--init-from`` a local ``config.json`` + ``*.safetensors``.

What is read: ``LlamaForCausalLM`` (Llama, SmolLM2, TinyLlama), ``MistralForCausalLM`` and
``Qwen2ForCausalLM``. All three are Codette's ``llama`` block style (RMSNorm, SwiGLU with ``silu``,
no biases but Qwen2's q/k/v ones, ``qkv_bias``), with their own width, heads, key/value heads,
``intermediate_size``, ``rope_theta``, ``rms_norm_eps`` and tied or untied head.

- Hugging Face's Llama-family checkpoints already store Q and K in the rotate-half layout that
  Codette's :class:`~codette.model.transformer.Rotary` uses (``rotate_half`` is
  ``cat(-x2, x1)`` over the two halves of each head, with the frequencies ``cat(freqs, freqs)``): the
  rows are taken as they are, *not* permuted. (The permutation in ``convert_llama_weights_to_hf`` is
  Meta's interleaved layout -> halves; llama.cpp's interleaved pairs are :mod:`codette.export.arch`'s
  business.)
- The tensor names are one table, :func:`hf_tensor_names`, which :mod:`codette.export.hf_export` writes
  with, so import and export cannot drift apart.
- A sliding window (Mistral v0.1, Qwen2 with ``use_sliding_window``) is exact for sequences no longer
  than the window, so the context (``max_seq_len``) is cut to the window and nothing else changes.
- Never downloaded: the folder is a path on this machine, and pickled ``pytorch_model.bin`` files are
  refused (only safetensors are read).

:func:`read_hf_config` and :func:`load_hf_weights` are pure (they read files, change nothing);
:func:`grow_vocab` adds embedding rows for tokens a tokenizer gained (:mod:`codette.tokenizer.hf`).
Third-party: safetensors, and ``tokenizers`` only to count a base model's tokens (:func:`hf_tokenizer_size`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from codette.errors import CodetteError
from codette.jsonl import read_json_object
from codette.model import CodetteModel, ModelConfig

CONFIG_JSON = "config.json"
SAFETENSORS_INDEX = "model.safetensors.index.json"
# ``architectures`` value -> (Hugging Face model_type, q/k/v biases)
ARCHITECTURES: dict[str, tuple[str, bool]] = {
    "LlamaForCausalLM": ("llama", False),
    "MistralForCausalLM": ("mistral", False),
    "Qwen2ForCausalLM": ("qwen2", True),
}
# Buffers some older checkpoints saved beside the weights; Codette recomputes them.
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


def hf_tensor_names(cfg: ModelConfig) -> list[tuple[str, str | None]]:
    """(Hugging Face name, Codette name or None for a zero LayerNorm bias) for every stored tensor.

    ``llama`` blocks are ``LlamaForCausalLM``'s names (``Qwen2ForCausalLM``'s with ``qkv_bias``),
    ``codette`` blocks ``Starcoder2ForCausalLM``'s. Tied embeddings store no ``lm_head.weight``.
    Export writes with this table and import reads with it.
    """
    llama = cfg.block_style == "llama"
    out: list[tuple[str, str | None]] = [("model.embed_tokens.weight", "embed.weight")]
    for i in range(cfg.n_layers):
        hf, cd = f"model.layers.{i}.", f"blocks.{i}."
        out.append((hf + "input_layernorm.weight", cd + "attn_norm.weight"))
        if not llama:
            out.append((hf + "input_layernorm.bias", None))
        for p in "qkvo":
            out.append((hf + f"self_attn.{p}_proj.weight", cd + f"attn.{p}_proj.weight"))
        if cfg.qkv_bias:
            out += [(hf + f"self_attn.{p}_proj.bias", cd + f"attn.{p}_proj.bias") for p in "qkv"]
        out.append((hf + "post_attention_layernorm.weight", cd + "mlp_norm.weight"))
        if llama:
            out += [(hf + "mlp.gate_proj.weight", cd + "mlp.gate_proj.weight"),
                    (hf + "mlp.up_proj.weight", cd + "mlp.up_proj.weight"),
                    (hf + "mlp.down_proj.weight", cd + "mlp.down_proj.weight")]
        else:
            out += [(hf + "post_attention_layernorm.bias", None),
                    (hf + "mlp.c_fc.weight", cd + "mlp.up_proj.weight"),
                    (hf + "mlp.c_proj.weight", cd + "mlp.down_proj.weight")]
    out.append(("model.norm.weight", "norm.weight"))
    if not llama:
        out.append(("model.norm.bias", None))
    if not cfg.tie_embeddings:
        out.append(("lm_head.weight", "lm_head.weight"))
    return out


def is_hf_folder(path: Path | str) -> bool:
    """A folder holding a ``config.json`` (what :func:`read_hf_config` reads)."""
    path = Path(path)
    return path.is_dir() and (path / CONFIG_JSON).is_file()


def read_hf_config(folder: Path | str) -> ModelConfig:
    """The :class:`ModelConfig` of Hugging Face model folder ``folder`` (its ``config.json``).

    Every field that changes what the network computes is checked: anything Codette's llama blocks
    cannot compute exactly (another activation, scaled RoPE, a head width other than
    hidden_size/num_attention_heads, biases other than Qwen2's q/k/v) is a one-line CodetteError naming
    the key, never a silently different model.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CodetteError(f"{folder} is not a folder; a Hugging Face model is a folder with {CONFIG_JSON} and "
                           f"*.safetensors")
    path = folder / CONFIG_JSON
    if not path.is_file():
        raise CodetteError(f"{folder} has no {CONFIG_JSON}: not a Hugging Face model folder (one holds "
                           f"{CONFIG_JSON} and *.safetensors)")
    hf = read_json_object(path)
    readable = ", ".join(ARCHITECTURES)
    archs = hf.get("architectures")
    arch = archs[0] if isinstance(archs, list) and archs else archs
    if not isinstance(arch, str) or arch not in ARCHITECTURES:
        raise CodetteError(f"{path}: architectures {archs!r} is not one Codette can read; it reads {readable}")
    model_type, qkv_bias = ARCHITECTURES[arch]

    def need(key: str, kind: type = int) -> Any:
        value = hf.get(key)
        if isinstance(value, bool) or not isinstance(value, kind) or (kind is int and value <= 0):
            raise CodetteError(f"{path}: {key!r} must be a positive {kind.__name__} for {arch}, got {value!r:.60}")
        return value

    def number(key: str, default: float, where: dict | None = None) -> float:
        value = (hf if where is None else where).get(key, default)
        if value is None:
            value = default
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise CodetteError(f"{path}: {key!r} must be a positive number, got {value!r:.60}")
        return float(value)

    d, heads = need("hidden_size"), need("num_attention_heads")
    kv_heads = hf.get("num_key_value_heads") or heads
    act = hf.get("hidden_act", "silu")
    if act != "silu":
        raise CodetteError(f"{path}: hidden_act {act!r}; Codette's SwiGLU reads only 'silu'")
    head_dim = hf.get("head_dim")
    if head_dim is not None and (d % heads or head_dim != d // heads):
        raise CodetteError(f"{path}: head_dim {head_dim} is not hidden_size/num_attention_heads ({d}/{heads}); "
                           f"Codette's heads are hidden_size/num_attention_heads wide")
    for key in ("attention_bias", "mlp_bias"):  # Llama options; Qwen2's q/k/v biases are its architecture
        if hf.get(key):
            raise CodetteError(f"{path}: {key} is true; Codette reads biases only on Qwen2's q/k/v projections")
    # RoPE: transformers 4.x writes rope_theta and rope_scaling, 5.x one rope_parameters object.
    rope = hf.get("rope_parameters") if isinstance(hf.get("rope_parameters"), dict) else {}
    scaling = hf.get("rope_scaling") or {}
    kind = (scaling.get("rope_type") or scaling.get("type")) if isinstance(scaling, dict) else scaling
    kind = kind or rope.get("rope_type", "default")
    if kind != "default":
        raise CodetteError(f"{path}: RoPE scaling {kind!r}; Codette computes plain RoPE only (rope_type 'default')")
    theta = number("rope_theta", 10000.0, rope if "rope_theta" in rope else None)
    if hf.get("rope_interleaved"):  # nanotron's key (SmolLM2 writes it false): adjacent pairs, not halves
        raise CodetteError(f"{path}: rope_interleaved is true; Codette rotates halves (transformers' rotate_half)")
    if hf.get("partial_rotary_factor", 1.0) not in (None, 1, 1.0):
        raise CodetteError(f"{path}: partial_rotary_factor {hf['partial_rotary_factor']}; Codette rotates whole heads")

    context = need("max_position_embeddings")
    window = hf.get("sliding_window")
    layer_types = hf.get("layer_types") or []
    sliding = "sliding_attention" in layer_types or (model_type == "mistral" and window) or \
        (model_type == "qwen2" and hf.get("use_sliding_window") and window)
    if sliding:
        if isinstance(window, bool) or not isinstance(window, int) or window <= 0:
            raise CodetteError(f"{path}: sliding attention without a positive sliding_window ({window!r})")
        context = min(context, window)  # within the window sliding attention is full attention
    tied = hf.get("tie_word_embeddings", False)
    try:
        return ModelConfig(
            vocab_size=need("vocab_size"), d_model=d, n_layers=need("num_hidden_layers"), n_heads=heads,
            n_kv_heads=kv_heads, d_ff=need("intermediate_size"), max_seq_len=context, block_style="llama",
            rope_theta=theta, norm_eps=number("rms_norm_eps", 1e-6), tie_embeddings=bool(tied),
            qkv_bias=qkv_bias, extra={"preset": folder.resolve().name, "hf_architecture": arch,
                                      "hf_model_type": hf.get("model_type", model_type)})
    except (TypeError, ValueError) as exc:
        raise CodetteError(f"{path}: {exc}") from None


def safetensors_files(folder: Path | str) -> list[Path]:
    """The weight files of ``folder``: those its ``model.safetensors.index.json`` names, else every
    ``*.safetensors``. A folder with only pickled ``*.bin`` weights is refused (never unpickled)."""
    folder = Path(folder)
    index = folder / SAFETENSORS_INDEX
    if index.is_file():
        weight_map = read_json_object(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise CodetteError(f"{index}: no 'weight_map'")
        files = [folder / name for name in sorted(set(weight_map.values()))]
        missing = [p for p in files if not p.is_file()]
        if missing:
            raise CodetteError(f"{index} names {missing[0].name}, which is not in {folder} "
                               f"({len(missing)} of {len(files)} files missing)")
        return files
    files = sorted(folder.glob("*.safetensors"))
    if files:
        return files
    if any(folder.glob("*.bin")) or any(folder.glob("*.pt")) or any(folder.glob("*.pth")):
        raise CodetteError(f"{folder} holds pickled weights (*.bin) only; Codette reads *.safetensors and never "
                           f"unpickles: save the model with save_pretrained(..., safe_serialization=True)")
    raise CodetteError(f"{folder} has no *.safetensors weights")


def _expected_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        model = CodetteModel(cfg)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def load_hf_weights(folder: Path | str, cfg: ModelConfig, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Codette's state dict (as ``CodetteModel(cfg).state_dict()`` names it) from the safetensors of ``folder``.

    ``cfg`` is :func:`read_hf_config`'s (or one equal in shape). Tensors keep their stored dtype unless
    ``dtype`` is given; a tied head is the embedding tensor itself under both names. A missing tensor,
    an unexpected one or a wrong shape is a CodetteError naming it.
    """
    from safetensors import SafetensorError, safe_open

    folder = Path(folder)
    names = [(hf, cd) for hf, cd in hf_tensor_names(cfg) if cd is not None]
    if cfg.block_style != "llama" or len(names) != len(hf_tensor_names(cfg)):
        raise CodetteError(f"{folder}: only llama-style models are read from Hugging Face folders")
    where: dict[str, Path] = {}
    for file in safetensors_files(folder):
        try:
            with safe_open(str(file), framework="pt") as fh:
                keys = list(fh.keys())
        except (SafetensorError, OSError, ValueError) as exc:
            raise CodetteError(f"{file} is not a readable safetensors file: {exc}") from None
        for key in keys:
            if key in where:
                raise CodetteError(f"{folder}: tensor '{key}' is stored twice ({where[key].name}, {file.name})")
            where[key] = file
    wanted = dict(names)
    missing = [hf for hf in wanted if hf not in where]
    if missing:
        hint = " (config.json says tie_word_embeddings is false)" if missing[0] == "lm_head.weight" else ""
        raise CodetteError(f"{folder}: no tensor '{missing[0]}'{hint}; {len(missing)} missing in all")
    extra = [k for k in where if k not in wanted and not k.endswith(_IGNORED_SUFFIXES)
             and not (cfg.tie_embeddings and k == "lm_head.weight")]
    if extra:
        raise CodetteError(f"{folder}: tensor '{extra[0]}' is not part of a {cfg.extra.get('hf_architecture', 'llama')}"
                           f" model as Codette reads it ({len(extra)} unexpected in all)")
    shapes = _expected_shapes(cfg)
    out: dict[str, torch.Tensor] = {}
    by_file: dict[Path, list[tuple[str, str]]] = {}
    for hf, cd in names:
        by_file.setdefault(where[hf], []).append((hf, cd))
    for file, pairs in by_file.items():
        with safe_open(str(file), framework="pt") as fh:
            for hf, cd in pairs:
                t = fh.get_tensor(hf)
                if tuple(t.shape) != shapes[cd]:
                    raise CodetteError(f"{file}: tensor '{hf}' has shape {list(t.shape)}, config.json implies "
                                       f"{list(shapes[cd])}")
                if not t.is_floating_point():
                    raise CodetteError(f"{file}: tensor '{hf}' has dtype {t.dtype}, expected a float type")
                out[cd] = t if dtype is None else t.to(dtype)
    if cfg.tie_embeddings:
        out["lm_head.weight"] = out["embed.weight"]
    return out


def hf_tokenizer_size(folder: Path | str) -> int | None:
    """Tokens of the ``tokenizer.json`` in ``folder`` (added tokens included); None without one.

    Rows of the embedding at or past this are padding the base model never trained: Codette's added
    special tokens take those ids first (:mod:`codette.tokenizer.hf`).
    """
    path = Path(folder) / "tokenizer.json"
    if not path.is_file():
        return None
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_file(str(path)).get_vocab_size(with_added_tokens=True)
    except Exception as exc:  # tokenizers raises plain Exception subclasses
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CodetteError(f"{path} is not a valid tokenizer file: {first}") from None


def grow_vocab(weights: dict[str, torch.Tensor], cfg: ModelConfig, vocab_size: int, new_rows: Iterable[int] = (),
               mean_of: int | None = None) -> tuple[dict[str, torch.Tensor], ModelConfig]:
    """``weights`` with ``vocab_size`` embedding rows (and head rows) and the config that says so.

    The rows past ``cfg.vocab_size``, and rows ``new_rows`` (tokens added where the table already had
    unused padding rows, as Qwen2's has), are set to the mean of the other rows below ``mean_of`` (default
    all of them: pass the base tokenizer's size to leave its padding rows out). Mean rows give a new
    token the model's average input and, in the head, the average logit, so adding tokens changes
    nothing the model says about the old ones. An untied head gets its own mean; a tied one stays tied.
    """
    old = cfg.vocab_size
    if vocab_size < old:
        raise CodetteError(f"cannot shrink the embedding from {old} to {vocab_size} rows")
    fresh = set(range(old, vocab_size)) | {int(i) for i in new_rows}
    bad = [i for i in fresh if not 0 <= i < vocab_size]
    if bad:
        raise CodetteError(f"row {bad[0]} is outside an embedding of {vocab_size} rows")
    keep = [i for i in range(min(mean_of or old, old)) if i not in fresh]
    if not keep:
        raise CodetteError("no existing embedding rows to initialise new rows from")

    def grown(t: torch.Tensor) -> torch.Tensor:
        mean = t[keep].float().mean(0).to(t.dtype)
        out = torch.empty((vocab_size, t.shape[1]), dtype=t.dtype, device=t.device)
        out[:old] = t
        out[sorted(fresh)] = mean
        return out

    out = dict(weights)
    out["embed.weight"] = grown(weights["embed.weight"])
    out["lm_head.weight"] = out["embed.weight"] if cfg.tie_embeddings else grown(weights["lm_head.weight"])
    return out, dataclasses.replace(cfg, vocab_size=vocab_size)
