"""Checkpoint -> Hugging Face folder that ``transformers`` loads without ``trust_remote_code``.

``llama`` blocks are ``LlamaForCausalLM`` as they are (Hugging Face rotates halves, like Codette, so
Q and K are *not* permuted). ``codette`` blocks are ``Starcoder2ForCausalLM`` with ``use_bias=False``
and ``hidden_act="gelu_pytorch_tanh"``; Starcoder2's LayerNorms always have a bias, so zeros are
written for them. A model with q/k/v biases (an imported Qwen2, ``qkv_bias``) is ``Qwen2ForCausalLM``.
The tensor names are :func:`codette.checkpoint.hf.hf_tensor_names`, the table import reads with too.
Tied embeddings become ``tie_word_embeddings`` and no ``lm_head.weight`` is stored.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from codette.checkpoint.hf import hf_tensor_names
from codette.errors import CodetteError
from codette.export.files import atomic_dir, refuse_existing
from codette.export.source import ExportSource, open_checkpoint
from codette.tokenizer.bpe import CONFIG_FILE, TOKENIZER_FILE
from codette.tokenizer.chat_template import BOS, EOS, IM_END, PAD

log = logging.getLogger(__name__)

HF_DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}
_DTYPE_NAMES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}


@dataclass
class HFExport:
    path: Path
    architecture: str
    dtype: str
    n_tensors: int


def hf_folder_name(preset: str) -> str:
    return f"codette_{preset}-hf"


def hf_config(src: ExportSource, dtype: torch.dtype) -> dict:
    """``config.json`` for the architecture matching the block style."""
    cfg, tok = src.cfg, src.tokenizer
    common = {
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model,
        "intermediate_size": cfg.ffn_dim,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.kv_heads,
        "head_dim": cfg.head_dim,
        "max_position_embeddings": cfg.max_seq_len,
        "rope_theta": float(cfg.rope_theta),  # transformers 4.x
        "rope_parameters": {"rope_type": "default", "rope_theta": float(cfg.rope_theta)},  # transformers 5.x
        "tie_word_embeddings": bool(cfg.tie_embeddings),
        "initializer_range": cfg.init_std,
        "attention_dropout": 0.0,
        "bos_token_id": tok.token_id(BOS),
        "eos_token_id": tok.token_id(IM_END),
        "pad_token_id": tok.token_id(PAD),
        "torch_dtype": _DTYPE_NAMES[dtype],
        "use_cache": True,
    }
    if cfg.qkv_bias:  # an imported Qwen2 model (codette.checkpoint.hf): Llama's blocks with q/k/v biases
        return {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", **common, "hidden_act": "silu",
                "rms_norm_eps": cfg.norm_eps, "use_sliding_window": False, "sliding_window": None}
    if cfg.block_style == "llama":
        return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", **common, "hidden_act": "silu",
                "rms_norm_eps": cfg.norm_eps, "attention_bias": False, "mlp_bias": False}
    return {"architectures": ["Starcoder2ForCausalLM"], "model_type": "starcoder2", **common,
            "hidden_act": "gelu_pytorch_tanh", "norm_epsilon": cfg.norm_eps, "use_bias": False,
            "residual_dropout": 0.0, "embedding_dropout": 0.0, "sliding_window": None}


def generation_config(src: ExportSource) -> dict:
    tok = src.tokenizer
    return {"bos_token_id": tok.token_id(BOS), "eos_token_id": [tok.token_id(IM_END), tok.token_id(EOS)],
            "pad_token_id": tok.token_id(PAD), "do_sample": True, "temperature": 0.7,
            "max_length": src.cfg.max_seq_len}


def export_hf(checkpoint: Path | str, out_dir: Path | str | None = None, dtype: str = "f32",
              force: bool = False) -> HFExport:
    """Write ``<out_dir>/codette_<preset>-hf/`` (config, safetensors, tokenizer, generation config)."""
    if dtype not in HF_DTYPES:
        raise CodetteError(f"--quant {dtype!r} is not available for --format hf; choose one of: "
                           f"{', '.join(HF_DTYPES)}")
    torch_dtype = HF_DTYPES[dtype]
    src = open_checkpoint(checkpoint)
    out = Path(out_dir) if out_dir is not None else src.path.parent
    path = out / hf_folder_name(src.preset)
    refuse_existing([path], force)
    names = hf_tensor_names(src.cfg)
    d = src.cfg.d_model
    tensors = {}
    for hf_name, cd_name in names:  # views of the mmapped checkpoint unless a dtype change copies
        t = torch.zeros(d) if cd_name is None else src.weights[cd_name]
        tensors[hf_name] = t.to(torch_dtype).contiguous()
    tok_cfg = {**src.tokenizer.hf_config(), "model_max_length": src.cfg.max_seq_len}
    with atomic_dir(path) as tmp:
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(hf_config(src, torch_dtype), indent=2) + "\n", encoding="utf-8")
        (tmp / "generation_config.json").write_text(json.dumps(generation_config(src), indent=2) + "\n",
                                                    encoding="utf-8")
        (tmp / TOKENIZER_FILE).write_text(src.tokenizer.tok.to_str(pretty=False), encoding="utf-8")
        (tmp / CONFIG_FILE).write_text(json.dumps(tok_cfg, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    arch = hf_config(src, torch_dtype)["architectures"][0]
    log.info("wrote %s (%s, %s, %d tensors)", path, arch, dtype, len(tensors))
    return HFExport(path=path, architecture=arch, dtype=dtype, n_tensors=len(tensors))
