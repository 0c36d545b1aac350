"""The engine: data batches, the trainer, the training regimes, per-task metrics and one cell's run."""
