"""llama.cpp evaluation speed of the portable llama-cpp-python build against a native one, side by side.

The Makefile builds llama-cpp-python for a fixed instruction set (x86-64-v3: AVX2/FMA/F16C, no AVX-512,
no AMX) so that it runs on every machine of its kind. This prints what that costs: prompt processing and
one-token decoding, in tokens per second, of the same F16 and Q8_0 GGUFs (the tiny preset's shape with
random weights; speed does not depend on the weights) under both builds. Runs alternate (portable,
native, portable, ...) so a busy machine slows both alike; the median of each is compared.

Build the native copy once, beside the venv (a few minutes on 2 cores; never from pip's cache):

    CMAKE_ARGS="-DGGML_NATIVE=ON -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF" \\
      .venv/bin/pip install --no-cache-dir --no-deps --target /tmp/llama-native llama-cpp-python==0.3.36
    .venv/bin/python benchmarks/llama_build_speed.py --native /tmp/llama-native

(On an Intel Xeon with AMX, keep the AMX options off for the native build: with them on, Q8_0 crashes.)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

# Runs in a child process, so each build's library is the only llama.cpp loaded there.
_CHILD = r"""
import json, sys, time
import llama_cpp
path, n_prompt, n_gen, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
llm = llama_cpp.Llama(path, n_ctx=n_prompt + n_gen + 8, n_threads=threads, n_threads_batch=threads,
                      n_batch=n_prompt, verbose=False)
vocab = llm.n_vocab()
prompt = [(7 * i + 3) % (vocab - 16) + 8 for i in range(n_prompt)]
llm.reset(); llm.eval(prompt[:8])  # warm-up
llm.reset()
t0 = time.perf_counter(); llm.eval(prompt); t1 = time.perf_counter()
for i in range(n_gen):
    llm.eval([prompt[i % n_prompt]])
t2 = time.perf_counter()
info = llama_cpp.llama_print_system_info().decode()
print(json.dumps({"pp": n_prompt / (t1 - t0), "tg": n_gen / (t2 - t1), "info": info,
                  "lib": llama_cpp.__file__}))
"""


def make_ggufs(folder: Path) -> dict[str, Path]:
    """F16 and Q8_0 GGUFs of the tiny preset with random weights and a small real tokenizer."""
    import torch

    from codette.checkpoint import save_checkpoint
    from codette.data import synthetic
    from codette.export import export_gguf
    from codette.model import CodetteModel, preset_config
    from codette.tokenizer import CodetteTokenizer, render

    train, val, _ = synthetic.generate(300, seed=0)
    tok = CodetteTokenizer.train([render(s.messages, s.tools) for s in train + val], vocab_size=4096)
    tok.save(folder)
    cfg = dataclasses.replace(preset_config("tiny"), vocab_size=4096)
    torch.manual_seed(0)
    model = CodetteModel(cfg)
    ckpt = folder / "model_random.pt"
    save_checkpoint({"model": model.state_dict(), "model_config": dataclasses.asdict(cfg), "step": 0}, ckpt)
    return {q: export_gguf(ckpt, folder, q, force=True, modelfile=False).path for q in ("f16", "q8_0")}


def run(build_path: str | None, gguf: Path, args: argparse.Namespace) -> dict:
    env = dict(os.environ)
    if build_path:
        env["PYTHONPATH"] = build_path + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-c", _CHILD, str(gguf), str(args.prompt), str(args.gen),
                          str(args.threads)], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--native", required=True, help="folder holding a natively built llama_cpp package")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--prompt", type=int, default=256, help="prompt tokens processed in one batch")
    ap.add_argument("--gen", type=int, default=128, help="tokens decoded one at a time")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    if not (Path(args.native) / "llama_cpp").is_dir():
        sys.exit(f"error: --native {args.native}: no llama_cpp package in that folder (see this script's docstring)")
    builds = {"portable": None, "native": args.native}
    with tempfile.TemporaryDirectory(prefix="codette-llama-bench-") as tmp:
        ggufs = make_ggufs(Path(tmp))
        results: dict[tuple[str, str], list[dict]] = {}
        for _ in range(args.rounds):
            for quant, path in ggufs.items():
                for name, where in builds.items():
                    results.setdefault((quant, name), []).append(run(where, path, args))
    for name in builds:
        first = results[("f16", name)][0]
        print(f"{name}: {first['lib']}\n  {first['info'].strip()}")
    print(f"\n{'quant':6} {'measure':22} {'portable tok/s':>15} {'native tok/s':>13} {'portable/native':>16}")
    for quant in ggufs:
        for key, label in (("pp", f"prompt ({args.prompt} tokens)"), ("tg", f"decode ({args.gen} tokens)")):
            p = statistics.median(r[key] for r in results[(quant, "portable")])
            n = statistics.median(r[key] for r in results[(quant, "native")])
            print(f"{quant:6} {label:22} {p:15,.0f} {n:13,.0f} {p / n:16.2f}")


if __name__ == "__main__":
    main()
