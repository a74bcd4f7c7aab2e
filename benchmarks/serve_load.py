"""Load on `codette serve` against `python -m llama_cpp.server`, same GGUF, same machine, one run.

    python benchmarks/serve_load.py [codette_model/codette_tiny-f16.gguf] [--clients 8] [--requests 200]

Each server is started in turn on loopback, warmed up with 3 requests, then ``--clients`` concurrent
clients send ``--requests`` chat completions in all (greedy, ``max_tokens`` 32, short prompts). It
prints, per server: errors (anything but a 200, a connection failure included), throughput in
requests/s and completion tokens/s (the ``usage`` each reply reports, over the wall time of the
burst), and p50/p95 latency. The ratio line divides Codette's tokens/s by llama_cpp.server's.

A second burst checks the queue limit: `codette serve --max-queue 2` with 8 clients must answer
every request, either 200 or 503 (never a dropped connection); it prints the counts.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

PROMPTS = ["Who are you?", "What is 37 * 91?", "Tell me about Newton.", "What can you do?",
           "Explain gravity in one sentence.", "Hello!", "Give me a tip for debugging.", "What is a GGUF file?"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], port: int, log: Path) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{cmd[0]} exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"{cmd[0]} did not start: {log.read_text()[-2000:]}")


async def burst(url: str, clients: int, total: int, max_tokens: int) -> dict:
    latencies: list[float] = []
    codes: dict[str, int] = {}
    tokens = 0
    todo = iter(range(total))

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal tokens
        for i in todo:
            body = {"model": "codette", "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
                    "max_tokens": max_tokens, "temperature": 0}
            t0 = time.perf_counter()
            try:
                r = await http.post(url + "/v1/chat/completions", json=body)
                key = str(r.status_code)
                if r.status_code == 200:
                    tokens += r.json()["usage"]["completion_tokens"]
                    latencies.append(time.perf_counter() - t0)
            except httpx.HTTPError as exc:
                key = type(exc).__name__
            codes[key] = codes.get(key, 0) + 1

    t0 = time.perf_counter()
    async with httpx.AsyncClient(timeout=600) as http:
        await asyncio.gather(*[client(http) for _ in range(clients)])
    wall = time.perf_counter() - t0
    lat = sorted(latencies)
    return {"codes": codes, "wall_s": wall, "req_per_s": len(lat) / wall, "tokens_per_s": tokens / wall,
            "p50_s": statistics.median(lat) if lat else float("nan"),
            "p95_s": lat[max(0, int(round(0.95 * len(lat))) - 1)] if lat else float("nan")}


def measure(name: str, cmd: list[str], port: int, args: argparse.Namespace, out: Path) -> dict:
    proc = start(cmd, port, out / f"{name}.log")
    try:
        url = f"http://127.0.0.1:{port}"
        asyncio.run(burst(url, 1, 3, args.max_tokens))  # warm-up
        result = asyncio.run(burst(url, args.clients, args.requests, args.max_tokens))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    errors = sum(v for k, v in result["codes"].items() if k != "200")
    print(f"{name:18s} errors {errors:3d}  {result['req_per_s']:6.2f} req/s  {result['tokens_per_s']:7.1f} tokens/s  "
          f"p50 {result['p50_s']:.3f} s  p95 {result['p95_s']:.3f} s  ({result['codes']})", flush=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("gguf", nargs="?", default="codette_model/codette_tiny-f16.gguf")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    args = ap.parse_args()
    gguf = Path(args.gguf)
    if not gguf.is_file():
        raise SystemExit(f"{gguf} not found: run `make quickstart` first, or name a GGUF")
    out = Path("benchmarks/out")
    out.mkdir(parents=True, exist_ok=True)
    codette = [sys.executable, "-m", "codette", "serve", str(gguf), "--host", "127.0.0.1"]
    print(f"{args.clients} clients, {args.requests} requests, max_tokens {args.max_tokens}, {gguf}", flush=True)
    p1, p2, p3 = free_port(), free_port(), free_port()
    ours = measure("codette serve", codette + ["--port", str(p1), "--max-queue", str(args.clients)], p1, args, out)
    ref = measure("llama_cpp.server", [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host",
                                       "127.0.0.1", "--port", str(p2), "--n_ctx", "512", "--n_threads",
                                       str(args.threads)], p2, args, out)
    print(f"ratio (codette serve / llama_cpp.server tokens/s): {ours['tokens_per_s'] / ref['tokens_per_s']:.2f}")
    small = measure("codette --max-queue 2", codette + ["--port", str(p3), "--max-queue", "2"], p3, args, out)
    dropped = sum(v for k, v in small["codes"].items() if k not in ("200", "503"))
    print(f"queue limit: {small['codes'].get('200', 0)} answered, {small['codes'].get('503', 0)} refused with 503, "
          f"{dropped} dropped")


if __name__ == "__main__":
    main()
