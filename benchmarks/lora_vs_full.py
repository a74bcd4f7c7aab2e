"""LoRA against full fine-tuning on the same random base: trainable parameters, optimizer state, step time.

The base is a random ``LlamaForCausalLM`` built with ``transformers`` and saved as a Hugging Face folder
(nothing is downloaded), read the way ``--init-from`` reads it (:func:`codette.checkpoint.init_weights`).
Each side is the trainer's own step: :func:`codette.train.step.accumulate_gradients` under the loop's
autocast, gradient clipping, the trainer's AdamW (:func:`codette.train.schedule.build_optimizer`, fused on
the CPU) and ``zero_grad``; LoRA's side first injects peft's adapters (:func:`codette.train.lora.inject`,
every projection, rank ``--rank``). Both train the same batches; after warm-up their steps alternate so a
busy machine slows both alike, and the median step time of each is reported. Optimizer state is the bytes
of every tensor AdamW holds after a step (its moments; the step counters are scalars).

    python benchmarks/lora_vs_full.py                      # SmolLM2-135M's shape, random weights, fp32
    python benchmarks/lora_vs_full.py --layers 8 --threads 2 --steps 6
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from codette.checkpoint import init_weights
from codette.checkpoint.hf import read_hf_config
from codette.config import TrainConfig
from codette.model import CodetteModel
from codette.train.device import autocast_for, resolve_dtype
from codette.train.lora import inject
from codette.train.schedule import build_optimizer
from codette.train.step import accumulate_gradients


def random_base(folder: Path, layers: int) -> None:
    """SmolLM2-135M's shape (width 576, 9 heads, 3 key/value heads, SwiGLU 1536, vocabulary 49152, tied),
    with ``layers`` layers and random weights."""
    import transformers

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=layers,
                                   num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048,
                                   rope_theta=100000.0, rms_norm_eps=1e-5, tie_word_embeddings=True)
    transformers.LlamaForCausalLM(cfg).save_pretrained(folder, safe_serialization=True)


def optimizer_bytes(opt: torch.optim.Optimizer) -> int:
    return sum(t.numel() * t.element_size() for s in opt.state.values() for t in s.values()
               if torch.is_tensor(t) and t.dim() > 0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=30, help="layers of the random base (SmolLM2-135M: 30)")
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per side (after 2 warm-up steps)")
    ap.add_argument("--dtype", default="fp32", help="fp32 | bf16 | auto (train.dtype)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    precision = resolve_dtype(device, args.dtype)
    autocast = autocast_for(device, precision)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        random_base(base, args.layers)
        cfg = read_hf_config(base)
        _, weights = init_weights(base, cfg, None)
        sides = {}
        for name, rank in (("full", 0), ("lora", args.rank)):
            train = TrainConfig(lora_rank=rank, init_from=str(base) if rank else None, seed=1)
            model = CodetteModel(cfg).to(device)
            model.load_state_dict(weights)
            if rank:
                inject(model, train, None)
            model.train()
            sides[name] = (model, build_optimizer(model, train, fused=True), train)
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, cfg.vocab_size, (args.batch, args.seq_len + 1), generator=gen)
               for _ in range(args.steps + 2)]
    times: dict[str, list[float]] = {name: [] for name in sides}
    for i, batch in enumerate(batches):
        x, y = batch[:, :-1], batch[:, 1:]
        for name, (model, opt, train) in sides.items():
            t0 = time.perf_counter()
            accumulate_gradients(model, [(x, y)], y.numel(), device, autocast)
            torch.nn.utils.clip_grad_norm_(model.parameters(), train.max_grad_norm)
            opt.step()
            opt.zero_grad(set_to_none=True)
            if i >= 2:
                times[name].append(time.perf_counter() - t0)
    print(f"random base: {cfg.n_layers} layers x {cfg.d_model}, vocabulary {cfg.vocab_size}, "
          f"{sum(p.numel() for p in sides['full'][0].parameters()):,} parameters; {precision} on the CPU, "
          f"{torch.get_num_threads()} threads; batch {args.batch} x {args.seq_len} tokens; LoRA rank {args.rank} "
          f"on every projection")
    print(f"{'':6} {'trainable':>13} {'optimizer state':>16} {'median step':>12}  steps (s)")
    for name, (model, opt, _) in sides.items():
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        median = statistics.median(times[name])
        print(f"{name:6} {trainable:>13,} {optimizer_bytes(opt) / 2**20:>12,.1f} MiB {median:>10.3f} s"
              f"  {' '.join(f'{t:.3f}' for t in times[name])}")


if __name__ == "__main__":
    main()
