"""`codette report`: plots, a one-page HTML summary and TensorBoard events from a training run's metrics log."""

from codette.report.build import build_report
from codette.report.records import RunSeries, find_metrics_files, load_run

__all__ = ["RunSeries", "build_report", "find_metrics_files", "load_run"]
