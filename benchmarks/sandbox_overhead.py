"""What the execute_python sandbox costs per call: ``python benchmarks/sandbox_overhead.py --calls 20``.

Runs the same snippets, interleaved so machine load hits all paths alike, through:

* ``sandbox``: :func:`codette.tools.sandbox.run_sandboxed`, what every untrusted call takes
  (a fresh bubblewrap sandbox per call, workspace copied in and changes copied back);
* ``one-shot``: :func:`codette.tools.python_exec.run_python_once`, the old unsandboxed per-call path;
* ``worker``: :class:`codette.tools.PythonWorker`, the persistent worker the data generator keeps for
  its own trusted snippets (so ``codette data`` pays nothing for the sandbox).

Prints the median and 90th percentile wall time per call and the sandbox's ratio to the one-shot path.
``--files N --kib K`` puts N files of K KiB in the workspace, to see what the copy costs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from codette.tools.files import Workspace
from codette.tools.python_exec import PythonWorker, run_python_once
from codette.tools.sandbox import available, run_sandboxed

SNIPPETS = ["print(1)", "import math\nprint(math.factorial(20))", "open('out.txt', 'w').write('x' * 1000)"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=20, help="calls per path and snippet")
    ap.add_argument("--files", type=int, default=5, help="files in the workspace")
    ap.add_argument("--kib", type=int, default=4, help="size of each file")
    args = ap.parse_args()
    reason = available()
    if reason:
        sys.exit(f"error: {reason}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ws"
        root.mkdir()
        for i in range(args.files):
            (root / f"f{i}.txt").write_bytes(b"x" * (args.kib * 1024))
        ws = Workspace(root)
        times: dict[str, list[float]] = {"sandbox": [], "one-shot": [], "worker": []}
        with PythonWorker(root, timeout_s=10) as worker:
            worker.run("print(0)")  # started before timing: its start is paid once per generator
            paths = {"sandbox": lambda c: run_sandboxed(c, ws, 10.0, 512),
                     "one-shot": lambda c: run_python_once(c, root, 10.0, 512),
                     "worker": worker.run}
            for _ in range(args.calls):
                for code in SNIPPETS:
                    for name, run in paths.items():
                        start = time.perf_counter()
                        result = run(code)
                        times[name].append(time.perf_counter() - start)
                        if not result.ok:
                            sys.exit(f"error: {name} failed on {code!r}: {result.stderr.strip()[-200:]}")
    print(f"{len(times['sandbox'])} calls per path; workspace: {args.files} files of {args.kib} KiB")
    for name, ts in times.items():
        q = statistics.quantiles(ts, n=10)
        print(f"{name:>9}: median {1000 * statistics.median(ts):7.1f} ms   p90 {1000 * q[-1]:7.1f} ms")
    ratio = statistics.median(times["sandbox"]) / statistics.median(times["one-shot"])
    extra = statistics.median(times["sandbox"]) - statistics.median(times["one-shot"])
    print(f"sandbox / one-shot: {ratio:.2f}x  (+{1000 * extra:.1f} ms per call)")


if __name__ == "__main__":
    main()
