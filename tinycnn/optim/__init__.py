"""tinycnn.optim: optimizers and learning-rate schedulers."""
