"""GGUF export speed and peak memory on randomly initialised models (weights do not affect either).

For each model a training-style checkpoint (weights + AdamW moments, so the file is 3x the weights)
is written once by a helper process, dirty pages are flushed (``os.sync``), then ``export_gguf`` runs
in a fresh subprocess that reports its wall time and its peak resident memory
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``, which counts file pages mapped in as well as heap; the
launching process imports nothing heavy, because a child's maxrss starts from its parent's at fork).
Goals: >= 200 MB/s of GGUF written, and peak RSS <= 1.2x the fp32 weight bytes. Speed is reported
with and without the final fsync, which on a slow disk dominates.

    python benchmarks/export_speed.py                  # small-cpu and a ~350M codette-style model
    python benchmarks/export_speed.py --models small-cpu --quant q8_0
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODELS = {
    "small-cpu": {"preset": "small-cpu"},
    "350m": {"preset": "1.3b", "d_model": 1024, "n_layers": 24, "n_heads": 16, "vocab_size": 32768,
             "max_seq_len": 2048, "name": "bench-350m"},
}

CHILD = """
import json, resource, sys, time
t0 = time.perf_counter()
from codette.export import export_gguf
import_s = time.perf_counter() - t0
rss_after_import = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
t0 = time.perf_counter()
r = export_gguf(sys.argv[1], sys.argv[2], sys.argv[3], force=True, modelfile=False)
wall = time.perf_counter() - t0
hwm = [int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM")]
print(json.dumps({"seconds": wall, "write_seconds": r.write_seconds, "bytes": r.n_bytes, "import_seconds": import_s,
                  "rss_after_import": rss_after_import, "vm_hwm": hwm[0] if hwm else None,
                  "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def make_checkpoint(name: str, folder: Path) -> tuple[Path, int, int]:
    """A random-init checkpoint with optimizer moments, and a tiny tokenizer beside it."""
    import torch

    from codette.checkpoint import save_checkpoint
    from codette.model import CodetteModel, preset_config
    from codette.tokenizer import CodetteTokenizer

    spec = dict(MODELS[name])
    preset, label = spec.pop("preset"), spec.pop("name", None)
    cfg = preset_config(preset, block_style="codette", **spec)
    if label:
        cfg.extra = {**cfg.extra, "preset": label}
    folder.mkdir(parents=True, exist_ok=True)
    texts = ["Codette exports GGUF files for llama.cpp and Ollama. " * 20] * 50
    CodetteTokenizer.train(texts, vocab_size=300, min_frequency=1).save(folder)
    torch.manual_seed(0)
    model = CodetteModel(cfg)
    params = model.num_parameters()
    weights = model.state_dict()
    moments = {i: {"step": torch.tensor(1.0), "exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}
               for i, p in enumerate(model.parameters())}
    path = folder / "model_final.pt"
    save_checkpoint({"model": weights, "model_config": dataclasses.asdict(cfg), "step": 0,
                     "optimizer": {"state": moments, "param_groups": [{"params": list(moments)}]}}, path)
    del model, weights, moments
    gc.collect()
    return path, params, 4 * params


def _child(args: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, check=False)
    if proc.returncode:
        raise SystemExit(f"{' '.join(args[:2])} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(name: str, workdir: Path, quant: str) -> dict:
    made = _child([__file__, "--make", name, str(workdir / name)])
    ckpt, params, fp32_bytes = Path(made["path"]), made["params"], made["fp32_bytes"]
    os.sync()  # the checkpoint's writeback must not be billed to the export
    m = _child(["-c", CHILD, str(ckpt), str(workdir / name / "out"), quant])
    return {"model": name, "params": params, "fp32_weight_bytes": fp32_bytes, "checkpoint_bytes": ckpt.stat().st_size,
            "quant": quant, "gguf_bytes": m["bytes"], "seconds": m["seconds"],
            "mb_per_s": m["bytes"] / 1e6 / m["seconds"], "fp32_mb_per_s": fp32_bytes / 1e6 / m["seconds"],
            "seconds_before_fsync": m["write_seconds"], "mb_per_s_before_fsync": m["bytes"] / 1e6 / m["write_seconds"],
            "peak_rss": m["peak_rss"], "vm_hwm": m["vm_hwm"], "rss_after_import": m["rss_after_import"],
            "peak_rss_over_fp32": m["peak_rss"] / fp32_bytes,
            "export_rss_over_fp32": (m["peak_rss"] - m["rss_after_import"]) / fp32_bytes}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma-separated: {', '.join(MODELS)}")
    ap.add_argument("--quant", default="f16")
    ap.add_argument("--workdir", type=Path, default=None, help="where checkpoints go (default: a temp folder)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("--make", nargs=2, metavar=("MODEL", "DIR"), help=argparse.SUPPRESS)  # helper process
    args = ap.parse_args()
    if args.make:
        path, params, fp32_bytes = make_checkpoint(args.make[0], Path(args.make[1]))
        print(json.dumps({"path": str(path), "params": params, "fp32_bytes": fp32_bytes}))
        return
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="codette_export_bench_"))
    results = []
    for name in args.models.split(","):
        t0 = time.perf_counter()
        r = run(name.strip(), workdir, args.quant)
        results.append(r)
        ok_speed = ("ok" if r["mb_per_s"] >= 200 else "BELOW GOAL") if args.quant == "f16" else "goal is for f16"
        ok_rss = "ok" if r["peak_rss_over_fp32"] <= 1.2 else "ABOVE GOAL"
        print(f"{r['model']:>10}: {r['params'] / 1e6:,.1f}M params, checkpoint {r['checkpoint_bytes'] / 1e9:.2f} GB, "
              f"{args.quant} GGUF {r['gguf_bytes'] / 1e6:,.1f} MB in {r['seconds']:.2f} s = {r['mb_per_s']:,.0f} MB/s "
              f"({ok_speed}; {r['mb_per_s_before_fsync']:,.0f} MB/s before fsync); "
              f"peak RSS {r['peak_rss'] / 1e6:,.0f} MB = {r['peak_rss_over_fp32']:.2f}x fp32 weights "
              f"({ok_rss}; {r['rss_after_import'] / 1e6:,.0f} MB of it is Python + torch after imports, the export "
              f"adds {r['export_rss_over_fp32']:.2f}x)  [bench {time.perf_counter() - t0:.0f} s]",
              flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
