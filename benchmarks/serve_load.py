"""Load on `codette serve` against `python -m llama_cpp.server`, same GGUF, same machine, one run.

    python benchmarks/serve_load.py [codette_model/codette_tiny-f16.gguf] [--clients 8] [--requests 200] [--batches 10]

Both servers are started side by side on loopback and each is warmed up with 3 requests. The
``--requests`` chat completions per server (greedy, ``max_tokens`` 32, short prompts) are then sent in
``--batches`` batches per server that alternate between the two, in the order A B B A A B ..., so a
drift in the machine's speed (other work, heat) falls on both alike; within a batch ``--clients``
concurrent clients send it, and only one server works at a time while the other waits idle. It prints,
per server: errors (anything but a 200, a connection failure included), throughput in requests/s and
completion tokens/s (the ``usage`` each reply reports, over the summed wall time of that server's
batches), and p50/p95 latency over all its requests. The ratio line divides Codette's tokens/s by
llama_cpp.server's.

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
from dataclasses import dataclass, field
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


@dataclass
class Tally:
    """What a server answered over one or more batches."""

    codes: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    tokens: int = 0
    wall_s: float = 0.0

    def add(self, other: Tally) -> None:
        for k, v in other.codes.items():
            self.codes[k] = self.codes.get(k, 0) + v
        self.latencies += other.latencies
        self.tokens += other.tokens
        self.wall_s += other.wall_s

    def summary(self) -> dict:
        lat = sorted(self.latencies)
        wall = self.wall_s or float("nan")
        return {"codes": self.codes, "wall_s": self.wall_s, "req_per_s": len(lat) / wall,
                "tokens_per_s": self.tokens / wall, "p50_s": statistics.median(lat) if lat else float("nan"),
                "p95_s": lat[max(0, int(round(0.95 * len(lat))) - 1)] if lat else float("nan"),
                "errors": sum(v for k, v in self.codes.items() if k != "200")}


async def burst(url: str, clients: int, total: int, max_tokens: int, first: int = 0) -> Tally:
    """``total`` chat completions from ``clients`` concurrent clients (prompts from ``first`` on)."""
    tally = Tally()
    todo = iter(range(first, first + total))

    async def client(http: httpx.AsyncClient) -> None:
        for i in todo:
            body = {"model": "codette", "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
                    "max_tokens": max_tokens, "temperature": 0}
            t0 = time.perf_counter()
            try:
                r = await http.post(url + "/v1/chat/completions", json=body)
                key = str(r.status_code)
                if r.status_code == 200:
                    tally.tokens += r.json()["usage"]["completion_tokens"]
                    tally.latencies.append(time.perf_counter() - t0)
            except httpx.HTTPError as exc:
                key = type(exc).__name__
            tally.codes[key] = tally.codes.get(key, 0) + 1

    t0 = time.perf_counter()
    async with httpx.AsyncClient(timeout=600) as http:
        await asyncio.gather(*[client(http) for _ in range(clients)])
    tally.wall_s = time.perf_counter() - t0
    return tally


def report(name: str, result: dict) -> None:
    print(f"{name:18s} errors {result['errors']:3d}  {result['req_per_s']:6.2f} req/s  "
          f"{result['tokens_per_s']:7.1f} tokens/s  p50 {result['p50_s']:.3f} s  p95 {result['p95_s']:.3f} s  "
          f"({result['codes']})", flush=True)


def alternate(servers: dict[str, tuple[list[str], int]], args: argparse.Namespace, out: Path) -> dict[str, dict]:
    """Start every server, then send each its batches, alternating A B B A ...; their summaries by name."""
    procs: list[subprocess.Popen] = []
    try:
        for name, (cmd, port) in servers.items():
            procs.append(start(cmd, port, out / f"{name.replace(' ', '_')}.log"))
        urls = {name: f"http://127.0.0.1:{port}" for name, (_, port) in servers.items()}
        for url in urls.values():
            asyncio.run(burst(url, 1, 3, args.max_tokens))  # warm-up
        tallies = {name: Tally() for name in urls}
        per_batch = -(-args.requests // args.batches)
        order = list(urls)
        for b in range(args.batches):
            for name in (order if b % 2 == 0 else order[::-1]):
                left = args.requests - b * per_batch
                if left > 0:
                    tallies[name].add(asyncio.run(burst(urls[name], args.clients, min(per_batch, left),
                                                        args.max_tokens, first=b * per_batch)))
        return {name: t.summary() for name, t in tallies.items()}
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)


def measure(name: str, cmd: list[str], port: int, args: argparse.Namespace, out: Path) -> dict:
    """One server alone, one burst (the queue-limit check)."""
    proc = start(cmd, port, out / f"{name.replace(' ', '_')}.log")
    try:
        result = asyncio.run(burst(f"http://127.0.0.1:{port}", args.clients, args.requests, args.max_tokens))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    summary = result.summary()
    report(name, summary)
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("gguf", nargs="?", default="codette_model/codette_tiny-f16.gguf")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--batches", type=int, default=10, help="batches per server, alternating between the two")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    args = ap.parse_args()
    gguf = Path(args.gguf)
    if not gguf.is_file():
        raise SystemExit(f"{gguf} not found: run `make quickstart` first, or name a GGUF")
    out = Path("benchmarks/out")
    out.mkdir(parents=True, exist_ok=True)
    if args.batches < 1 or args.requests < 1:
        raise SystemExit("--batches and --requests must be 1 or more")
    # the same threads and context for both servers
    codette = [sys.executable, "-m", "codette", "serve", str(gguf), "--host", "127.0.0.1", "--threads",
               str(args.threads), "--ctx-size", "512"]
    print(f"{args.clients} clients, {args.requests} requests, max_tokens {args.max_tokens}, {gguf}", flush=True)
    p1, p2, p3 = free_port(), free_port(), free_port()
    print(f"{args.batches} alternating batches per server", flush=True)
    results = alternate({
        "codette serve": (codette + ["--port", str(p1), "--max-queue", str(args.clients)], p1),
        "llama_cpp.server": ([sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1",
                              "--port", str(p2), "--n_ctx", "512", "--n_threads", str(args.threads)], p2),
    }, args, out)
    for name, result in results.items():
        report(name, result)
    ours, ref = results["codette serve"], results["llama_cpp.server"]
    print(f"ratio (codette serve / llama_cpp.server tokens/s): {ours['tokens_per_s'] / ref['tokens_per_s']:.2f}")
    small = measure("codette --max-queue 2", codette + ["--port", str(p3), "--max-queue", "2"], p3, args, out)
    dropped = sum(v for k, v in small["codes"].items() if k not in ("200", "503"))
    print(f"queue limit: {small['codes'].get('200', 0)} answered, {small['codes'].get('503', 0)} refused with 503, "
          f"{dropped} dropped")


if __name__ == "__main__":
    main()
