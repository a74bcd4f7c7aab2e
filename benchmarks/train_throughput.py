"""Training throughput: Codette's real training step against a minimal nanoGPT-style step of the same shape.

Codette's step is the trainer's own: :func:`codette.train.step.accumulate_gradients` (forward with the
summed loss under the loop's autocast, backward), gradient clipping, the trainer's AdamW
(:func:`codette.train.schedule.build_optimizer`) and ``zero_grad``. The reference is written here the
way nanoGPT writes it: its own small GPT (fused qkv projection, ``F.scaled_dot_product_attention(
is_causal=True)``, learned positions, LayerNorm, GELU MLP, tied head), mean cross-entropy, clipping and
AdamW (fused where this torch supports it on the device). Both train the same shape on the same batch.

Four sides, their steps alternating after warm-up so that a busy machine slows all alike (the median
step time of each is reported): ``ref``, the nanoGPT-style step; ``old``, Codette's step with the full
output projection, eager (the step the one-stage quickstart trained with); ``ours``, the trainer's step
(the output layer at scored positions only); ``compiled``, ours with ``train.compile`` (its first
step, which compiles, is timed apart). A shape's ``scored`` share sets the rest of the targets to
IGNORE_INDEX in spans, as assistant-only chat windows are (``tiny-chat``: the quickstart chat stage's
measured 42.3%); the reference's mean cross-entropy skips them too, but projects every position. Achieved FLOP/s use the project's one formula
(:mod:`codette.model.flops`)::

    flops_per_token = 6 * N + 12 * L * T * d_attn

(N: parameters multiplied per token, i.e. all but the input embedding lookup and the norms; L layers,
T window length, d_attn = heads x head size), against this machine's matmul peak timed in the same
run, before and after the models: the best of a few fp32 (and bf16) 2048 x 2048 matmuls (2 * 2048^3
FLOPs each) with the same number of threads.

    python benchmarks/train_throughput.py                  # every shape, fp32 and the default precision
    python benchmarks/train_throughput.py --shapes tiny-chat --dtypes auto --profile
    python benchmarks/train_throughput.py --threads 1       # on a CPU that other jobs share
"""

from __future__ import annotations

import argparse
import contextlib
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from codette.config import TrainConfig
from codette.model import CodetteModel, ModelConfig
from codette.model.loss import IGNORE_INDEX
from codette.model.flops import gpu_bf16_peak, matmul_parameters, matmul_peak, model_flops_per_token
from codette.train.device import autocast_for, pick_device, resolve_dtype
from codette.train.schedule import build_optimizer
from codette.train.step import accumulate_gradients


def compile_blocks(model: CodetteModel) -> None:
    """What ``train.compile`` does to the model (codette.train.trainer.Trainer.wrap)."""
    model.compile_blocks()


@dataclass(frozen=True)
class Shape:
    name: str
    n_layers: int
    n_heads: int
    d_model: int
    seq_len: int
    batch: int
    vocab: int
    scored: float = 1.0  # share of the targets that are scored (the rest IGNORE_INDEX, as assistant-only masks)


# The quickstart's chat stage scores 42.3% of its targets (1,928,914 of 4,559,673 tokens of its packed
# train split, assistant-only); its copy stage, every token (the "tiny" shape).
CHAT_SCORED = 0.423

SHAPES = {
    s.name: s
    for s in (
        Shape("nanogpt-cpu", 4, 4, 128, 64, 12, 128),  # nanoGPT's CPU example (shakespeare_char, vocab padded)
        Shape("tiny", 6, 8, 256, 768, 6, 4096),  # the quickstart's preset, window and batch: its copy stage
        Shape("tiny-chat", 6, 8, 256, 768, 6, 4096, CHAT_SCORED),  # ... and its chat stage
        Shape("40m", 12, 8, 512, 256, 4, 8192),  # ~42M parameters, kept to short steps
    )
}


def masked_targets(y: torch.Tensor, share: float, gen: torch.Generator) -> torch.Tensor:
    """``y`` with all but ``share`` of each row set to IGNORE_INDEX, in spans as a chat's replies are."""
    if share >= 1.0:
        return y
    b, t = y.shape
    span = 64  # scored and unscored stretches alternate within every 64 tokens
    offset = torch.randint(0, span, (b, 1), generator=gen)
    scored = (torch.arange(t)[None, :] + offset) % span < round(share * span)
    return y.masked_fill(~scored.to(y.device), IGNORE_INDEX)


# --- the reference: a minimal nanoGPT-style GPT ----------------------------------------------------------

class RefAttention(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.c_attn = nn.Linear(d, 3 * d, bias=False)
        self.c_proj = nn.Linear(d, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.c_attn(x).split(d, dim=2)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).contiguous().view(b, t, d))


class RefBlock(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(d, bias=False)
        self.attn = RefAttention(d, heads)
        self.ln_2 = nn.LayerNorm(d, bias=False)
        self.c_fc = nn.Linear(d, 4 * d, bias=False)
        self.mlp_proj = nn.Linear(4 * d, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class RefGPT(nn.Module):
    def __init__(self, s: Shape) -> None:
        super().__init__()
        self.wte = nn.Embedding(s.vocab, s.d_model)
        self.wpe = nn.Embedding(s.seq_len, s.d_model)
        self.h = nn.ModuleList(RefBlock(s.d_model, s.n_heads) for _ in range(s.n_layers))
        self.ln_f = nn.LayerNorm(s.d_model, bias=False)
        self.lm_head = nn.Linear(s.d_model, s.vocab, bias=False)
        self.lm_head.weight = self.wte.weight
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        for block in self.h:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), reduction=reduction,
                               ignore_index=IGNORE_INDEX)


def ref_matmul_parameters(model: RefGPT) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if p.dim() == 2 and n not in ("wpe.weight",))


def fused_adamw_ok(device: torch.device) -> bool:
    try:
        torch.optim.AdamW([torch.zeros(1, device=device, requires_grad=True)], fused=True)
        return True
    except (RuntimeError, ValueError):
        return False


# --- the two steps ---------------------------------------------------------------------------------------

def codette_step(s: Shape, device: torch.device, dtype: str, x: torch.Tensor, y: torch.Tensor,
                 fused: bool | None = None, old: bool = False, compiled: bool = False,
                 ) -> tuple[Callable[[], None], nn.Module, ModelConfig]:
    """The trainer's step; ``old`` as it was before the output layer ran at scored positions only (the
    full projection, eager), ``compiled`` with ``train.compile`` (each block compiled in place)."""
    cfg = ModelConfig(vocab_size=s.vocab, d_model=s.d_model, n_layers=s.n_layers, n_heads=s.n_heads,
                      max_seq_len=s.seq_len)
    tcfg = TrainConfig(lr=1e-3, warmup_steps=0, max_steps=10**6, batch_size=s.batch, dtype=dtype)
    model = CodetteModel(cfg).to(device)
    model.train()
    if compiled:
        compile_blocks(model)
    # As the loop builds it (fused on CUDA only), unless --fused-adamw asks for the fused kernel here too.
    opt = build_optimizer(model, tcfg, fused=device.type == "cuda" if fused is None else fused)
    autocast = autocast_for(device, dtype)
    targets = int((y != IGNORE_INDEX).sum())

    def step() -> None:
        if old:
            with autocast:
                out = model(x, y)
            (out.loss_sum / targets).backward()
        else:
            accumulate_gradients(model, [(x, y)], targets, device, autocast)
        torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step, model, cfg


def reference_step(s: Shape, device: torch.device, dtype: str, x: torch.Tensor, y: torch.Tensor
                   ) -> tuple[Callable[[], None], RefGPT]:
    model = RefGPT(s).to(device)
    model.train()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.95), fused=fused_adamw_ok(device))
    ctx = (torch.autocast(device.type, dtype=torch.bfloat16) if resolve_dtype(device, dtype) == "bf16"
           else contextlib.nullcontext())

    def step() -> None:
        with ctx:
            loss = model(x, y)  # mean over the scored targets (cross_entropy skips IGNORE_INDEX)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step, model


def timed(fn: Callable[[], None], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default=",".join(SHAPES), help=f"comma-separated, from {', '.join(SHAPES)}")
    ap.add_argument("--dtypes", default="fp32,auto", help="precisions to run (auto: what training picks here)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--steps", type=int, default=0, help="timed steps per side (0: by shape, 8/6/3)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--fused-adamw", action="store_true",
                    help="give Codette's optimizer fused=True on this device too (the loop uses it on CUDA only)")
    ap.add_argument("--no-compile", action="store_true", help="leave out the compiled side (train.compile)")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch CPU threads (0: torch's default; 1 on a machine other jobs keep busy, where a "
                         "preempted thread stalls every parallel op of the others)")
    ap.add_argument("--profile", action="store_true", help="print torch.profiler's top ops of each side")
    args = ap.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    dtypes = list(dict.fromkeys(resolve_dtype(device, d) for d in args.dtypes.split(",")))
    print(f"device {device}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
          f"train.dtype=auto picks {resolve_dtype(device)} here")

    def measure_peaks() -> dict[str, float]:
        found = {"fp32": matmul_peak(device, torch.float32)}
        if "bf16" in dtypes or device.type == "cuda":
            found["bf16"] = matmul_peak(device, torch.bfloat16, reps=3)
        return found

    peaks = measure_peaks()
    for k, v in peaks.items():
        print(f"  measured {k} matmul peak (2048^2, {torch.get_num_threads()} threads): {v / 1e9:,.1f} GFLOP/s")
    if device.type == "cuda":
        spec = gpu_bf16_peak(torch.cuda.get_device_name())
        print(f"  {torch.cuda.get_device_name()}: spec-sheet bf16 peak "
              f"{'unknown' if spec is None else f'{spec / 1e12:,.0f} TFLOP/s'}")
    print("sides: ref = the nanoGPT-style step; old = Codette's step with the full output projection, eager; "
          "ours = the trainer's step (output layer at scored positions); compiled = ours with train.compile")

    sides = ["ref", "old", "ours"] + ([] if args.no_compile else ["compiled"])
    header = (f"{'shape':<11} {'prec':<5} {'scored':>6} " + " ".join(f"{k + ' tok/s':>14}" for k in sides)
              + f" {'best/ref':>8} {'best/old':>8} {'best % peak':>11}")
    rows = []
    for name in args.shapes.split(","):
        s = SHAPES[name]
        steps = args.steps or {"nanogpt-cpu": 8}.get(name, 6 if s.d_model <= 256 else 3)
        for dtype in dtypes:
            torch.manual_seed(0)
            gen = torch.Generator().manual_seed(0)
            x = torch.randint(0, s.vocab, (s.batch, s.seq_len), device=device)
            y = masked_targets(torch.randint(0, s.vocab, (s.batch, s.seq_len), device=device), s.scored, gen)
            fns: dict[str, Callable[[], None]] = {}
            fns["ours"], model, cfg = codette_step(s, device, dtype, x, y, True if args.fused_adamw else None)
            fns["old"], _, _ = codette_step(s, device, dtype, x, y, old=True)
            fns["ref"], ref_model = reference_step(s, device, dtype, x, y)
            assert ref_matmul_parameters(ref_model) == matmul_parameters(cfg), "shapes differ"
            compile_s = 0.0
            if "compiled" in sides:
                fns["compiled"], _, _ = codette_step(s, device, dtype, x, y, compiled=True)
                compile_s = timed(fns["compiled"], device)  # the first step compiles
            times: dict[str, list[float]] = {k: [] for k in sides}
            for i in range(args.warmup + steps):
                for side in sides:
                    dt = timed(fns[side], device)
                    if i >= args.warmup:
                        times[side].append(dt)
            if args.profile:
                for side in sides:
                    with torch.profiler.profile() as prof:
                        fns[side]()
                    print(f"--- {name} {dtype} {side}")
                    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
            tokens = s.batch * s.seq_len
            tps = {k: tokens / statistics.median(v) for k, v in times.items()}
            best = max((k for k in sides if k not in ("ref", "old")), key=lambda k: tps[k])
            fpt = model_flops_per_token(cfg, s.seq_len)  # the model's FLOPs, whatever share is scored
            rows.append(dict(name=name, dtype=dtype, scored=s.scored, tps=tps, best=best, compile_s=compile_s,
                             flops={k: v * fpt for k, v in tps.items()}))
            del fns, model, ref_model
            r = rows[-1]
            if len(rows) == 1:
                print(header)
            print(f"{name:<11} {dtype:<5} {s.scored:>6.0%} " + " ".join(f"{tps[k]:>14,.0f}" for k in sides)
                  + f" {tps[best] / tps['ref']:>7.2f}x {tps[best] / tps['old']:>7.2f}x "
                  f"{100 * r['flops'][best] / peaks[dtype]:>10.0f}%  (best: {best}"
                  + (f"; first compiled step {compile_s:.1f} s" if compile_s else "") + ")", flush=True)
    # Other jobs can slow one timing of the peak: it is measured again at the end and the best one counts.
    peaks = {k: max(v, measure_peaks()[k]) for k, v in peaks.items()}
    print("with the best peak of the run (" + ", ".join(f"{k} {v / 1e9:,.1f} GFLOP/s" for k, v in peaks.items())
          + "):")
    for r in rows:
        print(f"  {r['name']:<11} {r['dtype']:<5} " + ", ".join(
            f"{k} {100 * v / peaks[r['dtype']]:3.0f}%" for k, v in r["flops"].items()) + " of peak")
    worst = min(r["tps"][r["best"]] / r["tps"]["ref"] for r in rows)
    print(f"slowest ratio best/reference: {worst:.2f}x (goal >= 1.1x); "
          f"FLOPs/token = 6N + 12 L T d_attn (codette.model.flops), counted for every token of the window")
    if not math.isfinite(worst):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
