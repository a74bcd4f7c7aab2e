"""`codette report`: PNG plots and a one-page HTML from a real tiny run's metrics log; TensorBoard on request."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from matplotlib.image import imread

from codette.cli import stages
from codette.errors import CodetteError
from codette.report import build_report, find_metrics_files, load_run
from codette.tensorboard import scalars_of
from tests._pipeline import QUIET, codette, tiny_config

PLOTS = ("loss", "lr", "tokens_per_second", "grad_norm", "behavior", "copy")  # copy: train.copy_monitor's default


@pytest.fixture(scope="module")
def run(prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny run trained 30 steps with behavioral probes at each evaluation and live TensorBoard events."""
    out = tmp_path_factory.mktemp("report_run") / "run"
    shutil.copytree(prepared, out)
    cfg = tiny_config(out, **{"train.max_steps": 30, "train.eval_every": 10, "train.probes": 2,
                              "train.probe_budget": 1.0, "train.tensorboard": True})
    stages.run_train(cfg, QUIET)
    return out


def _events(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


@pytest.mark.slow
def test_report_writes_pngs_and_html_from_a_real_run(run: Path, tmp_path: Path) -> None:
    rep = build_report(run, tmp_path / "rep")
    assert set(rep.plots) == set(PLOTS)
    for name in PLOTS:
        png = tmp_path / "rep" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        img = imread(png)
        assert img.shape[0] > 200 and img.shape[1] > 400 and img.std() > 0.01  # a drawn chart, not blank
    page = rep.html.read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == len(PLOTS)
    for text in ("Codette training report", "val loss (last / best)", "Last training-time probe figures",
                 "not</b> a claim that the model is conscious", "metrics_"):
        assert text in page, text
    assert not list((tmp_path / "rep").glob(".*.tmp"))
    series = load_run(run)
    assert [s for s, _ in series.train["loss"]] == list(range(1, 31))
    assert [s for s, _ in series.eval["val_loss"]] == [10, 20, 30]
    assert all(n > 0 for pts in series.behavior.values() for _, _, n in pts)


@pytest.mark.slow
def test_report_includes_eval_json_figures(run: Path, tmp_path: Path) -> None:
    folder = tmp_path / "with_eval"
    shutil.copytree(run, folder, ignore=shutil.ignore_patterns("model_step_*"))
    stages.run_eval(folder / "model_final.pt", QUIET, max_batches=1, probes=2)
    rep = build_report(folder / "logs", folder / "report", eval_json=folder / "eval.json")
    page = rep.html.read_text(encoding="utf-8")
    assert "Held-out evaluation" in page and "consciousness_score" in page and "95% CI" in page
    report = json.loads((folder / "eval.json").read_text())
    assert f"{report['loss']:.4f}" in page and report["split"] == "test"
    # the run folder itself: the metrics are found through run_config.json's log_dir, eval.json beside it
    (folder / "run_config.json").write_text(json.dumps({"log_dir": str(folder / "logs")}))
    assert build_report(folder).eval_json == folder / "eval.json"


@pytest.mark.slow
def test_tensorboard_events_written_when_asked(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "rep"
    rep = build_report(run / "logs", out, tensorboard=True)
    tags = _events(rep.tensorboard)
    assert [s for s, _ in tags["train/loss"]] == list(range(1, 31))
    assert [s for s, _ in tags["eval/val_loss"]] == [10, 20, 30]
    assert any(t.startswith("behavior/") for t in tags) and not any(t.endswith("_n") for t in tags)
    build_report(run / "logs", out, tensorboard=True)  # rebuilt: replaced, not appended to
    assert len(list(rep.tensorboard.glob("events.out.tfevents.*"))) == 1
    assert not list(out.glob(".tensorboard*"))
    assert build_report(run / "logs", tmp_path / "plain").tensorboard is None
    assert not (tmp_path / "plain" / "tensorboard").exists()


@pytest.mark.slow
def test_training_with_tensorboard_writes_live_events(run: Path) -> None:
    folders = list((run / "logs" / "tensorboard").iterdir())
    assert len(folders) == 1
    tags = _events(folders[0])
    assert len(tags["train/loss"]) == 30 and "eval/val_loss" in tags and "eval/probe_overhead" in tags


@pytest.mark.slow
def test_report_cli(run: Path, tmp_path: Path) -> None:
    proc = codette("report", str(run / "logs"), "--out", str(tmp_path / "cli"), "--tensorboard", check=True)
    assert "report.html" in proc.stdout and (tmp_path / "cli" / "loss.png").is_file()
    assert list((tmp_path / "cli" / "tensorboard").glob("events.out.tfevents.*"))
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = codette("report", str(empty))
    assert proc.returncode == 2 and "error:" in proc.stderr and "no metrics_*.jsonl" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = codette("report", str(tmp_path / "missing"))
    assert proc.returncode == 2 and "run folder not found" in proc.stderr


def test_metrics_log_edge_cases(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    first = logs / "metrics_1.jsonl"
    first.write_text("\n".join(json.dumps(r) for r in [
        {"kind": "start", "step": 0, "resumed_from": ""},
        {"kind": "train", "step": 1, "loss": 5.0, "lr": 1e-3},
        {"kind": "train", "step": 2, "loss": 4.0, "lr": 1e-3},
        {"kind": "eval", "step": 2, "val_loss": 4.5, "tool_task_success": 0.25, "tool_task_success_n": 4},
    ]) + "\n")
    second = logs / "metrics_2.jsonl"
    second.write_text("\n".join(json.dumps(r) for r in [
        {"kind": "start", "step": 2, "resumed_from": "model_step_2.pt"},
        {"kind": "train", "step": 3, "loss": 3.5, "lr": 1e-3},
    ]) + '\n{"kind": "train", "step": 4, "lo')  # killed mid-write
    import os

    os.utime(first, (1, 1))
    assert find_metrics_files(logs) == [first, second]
    run = load_run(logs)
    assert run.train["loss"] == [(1, 5.0), (2, 4.0), (3, 3.5)]  # resumed chain, partial line skipped
    assert run.behavior["tool_task_success"] == [(2, 0.25, 4)] and run.eval["val_loss"] == [(2, 4.5)]
    ev = next(r for r in run.records if r["kind"] == "eval")
    assert ("behavior/tool_task_success", 0.25, 2) in scalars_of(ev) and ("eval/val_loss", 4.5, 2) in scalars_of(ev)
    rep = build_report(logs, tmp_path / "rep")
    assert set(rep.plots) == {"loss", "lr", "behavior"}
    (logs / "metrics_3.jsonl").write_text('{"kind": "start", "step": 0}\n{not json}\n{"kind": "train"}\n')
    with pytest.raises(CodetteError, match=r"metrics_3.jsonl:2: not valid JSON"):
        load_run(logs)
    (logs / "metrics_3.jsonl").write_text('{"kind": "start", "step": 0, "resumed_from": ""}\n')
    with pytest.raises(CodetteError, match="no train or eval records yet"):
        build_report(logs)


@pytest.mark.parametrize("flag, expected", [(["--tensorboard"], True), (["--no-tensorboard"], False), ([], False)])
def test_train_tensorboard_flag_maps_to_the_config(flag: list[str], expected: bool, monkeypatch, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from codette.cli import main

    seen = {}
    monkeypatch.setattr(main.stages, "run_train", lambda cfg, console, resume=None: seen.setdefault("cfg", cfg))
    result = CliRunner().invoke(main.app, ["train", "-o", str(tmp_path), *flag])
    assert result.exit_code == 0, result.output
    assert seen["cfg"].train.tensorboard is expected
