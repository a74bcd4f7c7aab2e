"""PNG plots of a run: losses, learning rate, throughput, gradient norm, behavioral metrics, the copy monitor.

Drawn with matplotlib's object API on an Agg canvas (no pyplot, no global backend switch), so it
works headless and does not disturb a notebook's backend. Behavioral metrics get their Wilson 95%
band from the logged value and n, so a jump that lies inside the band reads as the noise it is.
"""

from __future__ import annotations

import logging
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from codette.fileio import atomic_open
from codette.report.records import RunSeries
from codette.scoring.stats import wilson

log = logging.getLogger(__name__)

DPI = 100
BEHAVIOR_SHOWN = ("tool_task_success", "consciousness_score", "perspective_adherence", "tool_json_valid",
                  "identity_score", "behavior_score")
# The copy monitor's rates (codette.evaluate.copying), each with the eval record's field that counts its n,
# a colour and a legend label; the value rates get a Wilson band, the token rate none (a value's tokens
# are not independent draws).
COPY_SHOWN = (("copy_exact", "copy_n", "tab:blue", "values copied exactly", True),
              ("copy_exact_unseen", "copy_unseen", "tab:red", "... of values not in train.jsonl", True),
              ("copy_token_acc", "copy_tokens", "tab:gray", "value tokens right", False))


def _save(fig: Figure, path: Path) -> Path:
    import io

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    with atomic_open(path, "wb") as fh:
        fh.write(buf.getvalue())
    return path


def smoothing_window(n: int) -> int:
    """Odd window of the centred moving average: about 1/20 of the points, at least 3 (1 for tiny series)."""
    if n < 5:
        return 1
    return 2 * max(1, n // 40) + 1


def _smooth(values: list[float]) -> list[float]:
    """Centred moving average (the window shrinks at the ends).

    Centred rather than an exponential moving average: an EMA lags the data, so on a falling loss
    curve it sits above every raw point and makes the run look worse than it is.
    """
    k = smoothing_window(len(values)) // 2
    out = []
    for i in range(len(values)):
        lo, hi = max(0, i - k), min(len(values), i + k + 1)
        out.append(sum(values[lo:hi]) / (hi - lo))
    return out


def _xy(points: list[tuple]) -> tuple[list[int], list[float]]:
    return [p[0] for p in points], [p[1] for p in points]


def _axes(title: str, ylabel: str, size: tuple[float, float] = (7.0, 3.6)):
    fig = Figure(figsize=size)
    ax = fig.add_subplot(1, 1, 1)
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    return fig, ax


def plot_loss(run: RunSeries, path: Path) -> Path | None:
    train, val = run.train.get("loss", []), run.eval.get("val_loss", [])
    if not train and not val:
        return None
    fig, ax = _axes("Loss (nats per target token)", "loss")
    if train:
        x, y = _xy(train)
        ax.plot(x, y, color="tab:blue", alpha=0.25, linewidth=0.8, label="train (per step)")
        ax.plot(x, _smooth(y), color="tab:blue", linewidth=1.6,
                label=f"train (centred mean of {smoothing_window(len(y))} steps)")
    if val:
        x, y = _xy(val)
        ax.plot(x, y, "o-", color="tab:orange", linewidth=1.6, markersize=4, label="val")
    ax.legend(loc="upper right")
    return _save(fig, path)


def plot_series(points: list[tuple], path: Path, title: str, ylabel: str, color: str, log_y: bool = False,
                smooth: bool = False) -> Path | None:
    if not points:
        return None
    fig, ax = _axes(title, ylabel)
    x, y = _xy(points)
    ax.plot(x, y, color=color, alpha=0.35 if smooth else 1.0, linewidth=0.8 if smooth else 1.5)
    if smooth:
        ax.plot(x, _smooth(y), color=color, linewidth=1.6, label=f"centred mean of {smoothing_window(len(y))} steps")
        ax.legend(loc="best")
    if log_y and min(y) > 0:
        ax.set_yscale("log")
        plain = FuncFormatter(lambda v, _pos: f"{v:g}")  # 2, 3, 4 rather than 2x10^0
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(plain)
    return _save(fig, path)


def plot_behavior(run: RunSeries, path: Path) -> Path | None:
    """One small panel per behavioral metric (shared step axis, 0..1), each with its 95% Wilson band.

    Separate panels rather than one chart: early in training several metrics sit on the same value
    (often 0), and overlaid lines and bands would hide one another. The band comes from the logged
    value and n; for the means of several rates (consciousness_score, behavior_score) it approximates
    the interval ``codette eval`` computes.
    """
    shown = [k for k in BEHAVIOR_SHOWN if k in run.behavior] or sorted(run.behavior)[:6]
    if not shown:
        return None
    ncols = min(3, len(shown))
    nrows = -(-len(shown) // ncols)
    fig = Figure(figsize=(3.4 * ncols, 2.5 * nrows + 0.5))
    fig.suptitle("Behavioral probes during training (95% Wilson band)")
    axes = fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False)
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]
    for i, ax in enumerate(axes.flat):
        if i >= len(shown):
            ax.set_visible(False)
            continue
        name = shown[i]
        pts = run.behavior[name]
        x = [p[0] for p in pts]
        y = [p[1] for p in pts]
        lo, hi = zip(*(wilson(round(v * n), n) if n else (v, v) for _, v, n in pts))
        color = colors[i % len(colors)]
        ax.fill_between(x, lo, hi, color=color, alpha=0.18, linewidth=0)
        ax.plot(x, y, "o-", color=color, markersize=3.5, linewidth=1.4)
        ax.set_title(f"{name} (n={pts[-1][2]})", fontsize=9)
        ax.set_ylim(-0.03, 1.03)
        ax.grid(True, alpha=0.3)
        if i // ncols == nrows - 1 or i + ncols >= len(shown):
            ax.set_xlabel("step")
            ax.tick_params(labelbottom=True)
        if i % ncols == 0:
            ax.set_ylabel("score")
    fig.tight_layout()
    return _save(fig, path)


def copy_series(run: RunSeries) -> dict[str, list[tuple[int, float, int]]]:
    """The copy monitor's rates over the evaluations: metric -> [(step, value, n)], from the metrics log alone."""
    out: dict[str, list[tuple[int, float, int]]] = {}
    for r in run.records:
        if r.get("kind") != "eval":
            continue
        for key, n_key, *_ in COPY_SHOWN:
            value, n = r.get(key), r.get(n_key)
            if isinstance(value, (int, float)) and isinstance(n, int) and n > 0:
                out.setdefault(key, []).append((int(r["step"]), float(value), n))
    return out


def plot_copy(run: RunSeries, path: Path) -> Path | None:
    """The copy monitor's rates over steps on one 0..1 axis, the value rates with their 95% Wilson band."""
    series = copy_series(run)
    if not series:
        return None
    fig, ax = _axes("Copying the user's values into tool calls (val, teacher-forced)", "share")
    for key, _n_key, color, label, band in COPY_SHOWN:
        pts = series.get(key)
        if not pts:
            continue
        x, y = [p[0] for p in pts], [p[1] for p in pts]
        if band:
            lo, hi = zip(*(wilson(round(v * n), n) for _, v, n in pts))
            ax.fill_between(x, lo, hi, color=color, alpha=0.15, linewidth=0)
        ax.plot(x, y, "o-", color=color, markersize=3.5, linewidth=1.4, label=f"{label} (n={pts[-1][2]})")
    ax.set_ylim(-0.03, 1.03)
    ax.legend(loc="best", fontsize=8)
    return _save(fig, path)


def plot_all(run: RunSeries, out_dir: Path) -> dict[str, Path]:
    """Write every plot the run has data for; returns {name: path}."""
    out_dir.mkdir(parents=True, exist_ok=True)
    made = {
        "loss": plot_loss(run, out_dir / "loss.png"),
        "lr": plot_series(run.train.get("lr", []), out_dir / "lr.png", "Learning rate", "lr", "tab:green"),
        "tokens_per_second": plot_series(run.train.get("tokens_per_second", []), out_dir / "tokens_per_second.png",
                                         "Training throughput", "tokens / s", "tab:purple", smooth=True),
        "grad_norm": plot_series(run.train.get("grad_norm", []), out_dir / "grad_norm.png",
                                 "Gradient norm (before clipping)", "L2 norm", "tab:red", log_y=True, smooth=True),
        "behavior": plot_behavior(run, out_dir / "behavior.png"),
        "copy": plot_copy(run, out_dir / "copy.png"),
    }
    return {k: v for k, v in made.items() if v is not None}
