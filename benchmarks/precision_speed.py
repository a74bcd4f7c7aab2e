"""Training-step time in fp32 against bf16 autocast, side by side in one process.

A step is what the training loop does: forward under the loop's autocast context, fp32 cross-entropy,
backward, AdamW. Both precisions start from the same weights and batch; steps alternate
(fp32, bf16, fp32, ...) so a busy machine slows both alike. Prints milliseconds per step, tokens per
second and the ratio, and what ``train.dtype = "auto"`` picks on this machine.

    python benchmarks/precision_speed.py                       # tiny preset, 8 x 512 tokens
    python benchmarks/precision_speed.py --preset small-cpu --steps 4
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F

from codette.model.presets import preset_config
from codette.model.transformer import CodetteModel
from codette.train.device import autocast_for, pick_device, resolve_dtype


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--steps", type=int, default=6, help="timed steps per precision (after 2 warm-up steps)")
    args = ap.parse_args()

    device = pick_device("auto")
    torch.manual_seed(0)
    base = CodetteModel(preset_config(args.preset)).to(device)
    vocab = base.cfg.vocab_size
    x = torch.randint(0, vocab, (args.batch, args.seq), device=device)
    y = torch.randint(0, vocab, (args.batch, args.seq), device=device)
    runs = {}
    for dtype in ("fp32", "bf16"):
        model = copy.deepcopy(base)
        runs[dtype] = (model, torch.optim.AdamW(model.parameters(), lr=1e-3), autocast_for(device, dtype))

    def step(dtype: str) -> float:
        model, opt, autocast = runs[dtype]
        t0 = time.perf_counter()
        with autocast:
            logits = model(x)
        loss = F.cross_entropy(logits.float().view(-1, vocab), y.view(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for i in range(args.steps + 2):
        for dtype in times:
            dt = step(dtype)
            if i >= 2:
                times[dtype].append(dt)
    tokens = args.batch * args.seq
    print(f"{args.preset} preset on {device}, {args.batch} x {args.seq} tokens per step, "
          f"{torch.get_num_threads()} threads; train.dtype=auto picks {resolve_dtype(device)}")
    med = {k: statistics.median(v) for k, v in times.items()}
    for dtype, t in med.items():
        print(f"  {dtype}: {t * 1000:8.0f} ms/step  {tokens / t:10,.0f} tokens/s")
    print(f"  bf16 speed-up: {med['fp32'] / med['bf16']:.2f}x")


if __name__ == "__main__":
    main()
