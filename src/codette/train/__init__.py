"""The training loop: AdamW, warmup + cosine, clipping, accumulation, checkpoints, exact resume."""

from codette.train.loop import TrainResult, train

__all__ = ["TrainResult", "train"]
