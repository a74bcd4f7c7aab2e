"""The trained tiny test models: what they are and how they are trained. The session's fixtures in
``tests/conftest.py`` (``trained_models``, ``tiny``) build them once and the export, backend, agent
and serve tests share them.

Three 2-layer, d_model=64 models trained 300 steps on the same data and tokenizer (so logits are
far from uniform): ``codette`` blocks (-> GGUF starcoder2), ``llama`` blocks (-> GGUF llama) and
``llama`` blocks with grouped-query attention (4 query heads, 2 KV heads). The tokenizer has 500
tokens, so the 512-row embedding has 12 padding rows. About 35 s on a shared 2-core CPU. A fourth,
one-layer d_model=256 model (:data:`WIDE`, for the K-quants) is trained only by the GGUF tests.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from codette.checkpoint import load_model, save_checkpoint
from codette.cli import stages
from codette.config import build_config
from codette.model import CodetteModel, ModelConfig
from codette.tokenizer import CodetteTokenizer, render
from tests._pipeline import QUIET

BASE = {
    "data": {"samples": 400, "seed": 0},
    "tokenizer": {"vocab_size": 500},
    "train": {"lr": 3e-3, "warmup_steps": 20, "max_steps": 300, "eval_every": 300, "save_every": 300,
              "batch_size": 8, "eval_batches": 2, "log_every": 100, "threads": 1, "seed": 7, "keep_checkpoints": 1},
}
SHAPE = {"preset": "tiny", "d_model": 64, "n_layers": 2, "n_heads": 4, "max_seq_len": 128}
VARIANTS = {
    "codette": {**SHAPE, "block_style": "codette"},
    "llama": {**SHAPE, "block_style": "llama"},
    "gqa": {**SHAPE, "block_style": "llama", "n_kv_heads": 2},
}
ARCH = {"codette": "starcoder2", "llama": "llama", "gqa": "llama"}
# K-quants need rows of whole 256-value blocks: d_model and d_ff 256. One layer and 120 steps keep it
# near 20 s on a shared 2-core CPU (val loss ~3.3: a weak model, so its top-2 logit margins are small
# and top-1 agreement is a demanding measure of quantization error).
WIDE = {"preset": "tiny", "d_model": 256, "d_ff": 256, "n_layers": 1, "n_heads": 4, "max_seq_len": 128,
        "block_style": "llama"}
WIDE_TRAIN = {"max_steps": 120, "eval_every": 120, "save_every": 120, "warmup_steps": 10}


@dataclass
class Trained:
    name: str
    folder: Path
    checkpoint: Path
    arch: str

    def model(self) -> CodetteModel:
        return load_model(self.checkpoint)[0]

    def tokenizer(self) -> CodetteTokenizer:
        return CodetteTokenizer.load(self.folder)

    def val_conversations(self, n: int = 12) -> list[dict]:
        lines = (self.folder / "data" / "val.jsonl").read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines[:n]]

    def val_sequences(self, n: int = 12) -> list[list[int]]:
        """Token ids of held-out conversations, cut to the context length."""
        tok, ctx = self.tokenizer(), self.model_config().max_seq_len
        return [tok.encode(render(c["messages"], c.get("tools")))[:ctx] for c in self.val_conversations(n)]

    def model_config(self) -> ModelConfig:
        return ModelConfig(**torch.load(self.checkpoint, mmap=True, weights_only=True)["model_config"])


def shared_data(root: Path) -> Path:
    """``root/shared``: the data and tokenizer every trained model uses."""
    shared = root / "shared"
    cfg = build_config(None, {"out_dir": str(shared), "log_dir": str(shared / "logs")},
                       defaults={**BASE, "model": VARIANTS["codette"]})
    stages.run_data(cfg, QUIET)
    stages.run_tokenizer(cfg, QUIET)
    return shared


def train_model(shared: Path, name: str, model: dict, train: dict | None = None) -> Trained:
    """Model ``name`` (shape ``model``, :data:`BASE` training with ``train`` on top) beside ``shared``, on its
    data and tokenizer."""
    out = shared.parent / name
    out.mkdir()
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(shared / f, out / f)
    shutil.copytree(shared / "data", out / "data")
    defaults = {**BASE, "model": model, "train": {**BASE["train"], **(train or {})}}
    cfg = build_config(None, {"out_dir": str(out), "log_dir": str(out / "logs")}, defaults=defaults)
    result = stages.run_train(cfg, QUIET)
    return Trained(name, out, Path(result.final_checkpoint), ARCH.get(name, "llama"))


def random_checkpoint(folder: Path, tokenizer_from: Path, **overrides: object) -> Path:
    """An untrained checkpoint (any shape, e.g. rows that are not whole quant blocks) with a tokenizer."""
    folder.mkdir(parents=True, exist_ok=True)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tokenizer_from / f, folder / f)
    values = {"vocab_size": 512, "d_model": 64, "n_layers": 2, "n_heads": 4, "max_seq_len": 128,
              "extra": {"preset": "random"}, **overrides}
    cfg = ModelConfig(**values)
    torch.manual_seed(0)
    model = CodetteModel(cfg)
    path = folder / "model_random.pt"
    save_checkpoint({"model": model.state_dict(), "model_config": dataclasses.asdict(cfg), "step": 0}, path)
    return path
