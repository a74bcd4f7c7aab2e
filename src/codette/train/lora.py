"""LoRA fine-tuning with peft: adapters on a base model's frozen weights (``train.lora_rank``).

peft's own layers (``peft.inject_adapter_in_model`` with a ``LoraConfig``) replace the projections
``train.lora_targets`` names in every block of a :class:`~codette.model.CodetteModel`; everything else is
frozen, so the optimizer holds, and checkpoints keep, the adapters and their AdamW moments only. A
``Linear`` ``W`` becomes ``x W^T + (alpha / r) x A^T B^T`` with ``A`` (r x in, Kaiming-uniform) and ``B``
(out x r, zeros), so training starts from the base model exactly. ``A`` is drawn from a generator seeded
with ``train.seed`` alone: the same seed gives the same adapters whatever ran before.

On disk (:mod:`codette.checkpoint.lora`): the adapters in ``<checkpoint>.lora.safetensors``, the base by path
and fingerprint; reading a checkpoint merges them (``W + (alpha / r) B A``). peft is imported only here and
only for a LoRA run (``pip install 'codette[lora]'``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from codette.checkpoint import LORA, init_weights, model_config_of
from codette.checkpoint.lora import check_base, fingerprint
from codette.config import LORA_TARGETS, TrainConfig
from codette.errors import CodetteError
from codette.model import CodetteModel

INSTALL = "pip install 'codette[lora]'"
ADAPTER = "default"  # peft's adapter name; checkpoints name tensors without it (as peft saves them)


def require_peft(cfg: TrainConfig) -> Any:
    """The peft module, or the one-line error that says how to install it."""
    try:
        import peft
    except ImportError:
        raise CodetteError(f"train.lora_rank={cfg.lora_rank} needs the peft library, which is not installed: "
                           f"{INSTALL}") from None
    return peft


def model_targets(model: CodetteModel) -> list[str]:
    """The :data:`~codette.config.LORA_TARGETS` the model's blocks have (no ``gate_proj`` in codette blocks)."""
    names = {name.rsplit(".", 1)[-1] for name, module in model.blocks.named_modules()
             if isinstance(module, torch.nn.Linear)}
    return [t for t in LORA_TARGETS if t in names]


def resolve_targets(model: CodetteModel, cfg: TrainConfig) -> list[str]:
    """``train.lora_targets`` checked against the model (None: every projection it has)."""
    have = model_targets(model)
    if cfg.lora_targets is None:
        return have
    absent = [t for t in cfg.lora_targets if t not in have]
    if absent:
        raise CodetteError(f"train.lora_targets: {absent[0]!r} is not a projection of this model's "
                           f"{model.cfg.block_style} blocks; they have {', '.join(have)}")
    return [t for t in LORA_TARGETS if t in cfg.lora_targets]


class LoraAdapters:
    """A run's LoRA adapters: what :class:`~codette.checkpoint.manager.CheckpointManager` saves and restores
    (``meta``, :meth:`state`, :meth:`load`) in place of the whole model."""

    def __init__(self, rank: int, alpha: float, targets: list[str], base: Path | None) -> None:
        self.rank, self.alpha, self.targets = rank, alpha, targets
        self.base: Path | None = None
        self.base_fingerprint = ""
        if base is not None:
            self.set_base(base)

    def set_base(self, base: Path) -> None:
        self.base = Path(base).resolve()
        self.base_fingerprint = fingerprint(self.base)

    @property
    def meta(self) -> dict[str, Any]:
        """The checkpoint's ``lora`` entry (:data:`codette.checkpoint.lora.META_KEYS`)."""
        return {"rank": self.rank, "alpha": self.alpha, "targets": list(self.targets),
                "base": str(self.base) if self.base else "", "base_fingerprint": self.base_fingerprint}

    @staticmethod
    def state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """The adapters' tensors, named as peft saves them (``blocks.0.attn.q_proj.lora_A.weight``)."""
        from peft import get_peft_model_state_dict

        return {k: v.detach() for k, v in get_peft_model_state_dict(model, adapter_name=ADAPTER).items()}

    def load(self, model: torch.nn.Module, state: dict[str, Any]) -> None:
        """Resume: the base weights the checkpoint names (refused if changed), then its adapters."""
        from peft import set_peft_model_state_dict

        meta = state[LORA]
        base = check_base(meta, meta.get("adapters") or "the checkpoint")
        _, weights = init_weights(base, model_config_of(state), None)
        load_base(model, weights)
        self.base, self.base_fingerprint = Path(meta["base"]), meta["base_fingerprint"]
        adapters = state["model"]
        want = set(self.state(model))
        if set(adapters) != want:
            odd = sorted(set(adapters) ^ want)[0]
            raise CodetteError(f"the checkpoint's adapters do not match this run's: '{odd}' is in one only")
        set_peft_model_state_dict(model, adapters, adapter_name=ADAPTER)


def load_base(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Codette-named base weights into a model peft has wrapped (a wrapped ``q_proj.weight`` is
    ``q_proj.base_layer.weight`` there); the adapters are left as they are."""
    own = model.state_dict()
    mapped = {}
    for key, value in weights.items():
        module, _, leaf = key.rpartition(".")
        wrapped = f"{module}.base_layer.{leaf}"
        mapped[wrapped if wrapped in own else key] = value
    result = model.load_state_dict(mapped, strict=False)
    missing = [k for k in result.missing_keys if ".lora_" not in k]
    if missing or result.unexpected_keys:
        name = (missing or result.unexpected_keys)[0]
        raise CodetteError(f"the LoRA base's weights do not fit the model: '{name}' is "
                           f"{'missing' if missing else 'unexpected'}")


def inject(model: CodetteModel, cfg: TrainConfig, base: Path | None) -> LoraAdapters:
    """peft's LoRA layers into ``model`` (in place) on ``train.lora_targets``; every other weight frozen.

    ``base`` is the file or folder the base weights came from (None when resuming: the checkpoint names it).
    """
    peft = require_peft(cfg)
    targets = resolve_targets(model, cfg)
    config = peft.LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha_value, target_modules=targets,
                             lora_dropout=0.0, bias="none")
    with torch.random.fork_rng(devices=[]):  # peft draws A on the CPU from the global generator
        torch.manual_seed(cfg.seed)
        peft.inject_adapter_in_model(config, model, adapter_name=ADAPTER)
    for name, p in model.named_parameters():  # peft freezes the rest; a run must never train the base by accident
        if p.requires_grad != (".lora_" in name):
            raise CodetteError(f"LoRA: parameter '{name}' is {'trainable' if p.requires_grad else 'frozen'}")
    return LoraAdapters(cfg.lora_rank, cfg.lora_alpha_value, targets, base)
