"""`tinycnn.train`: the training API (re-exported from `tinycnn.training`).

    from tinycnn.train import train_run, Trainer
    result = train_run({"dataset": "synthetic", "epochs": 5, "out": "runs/demo"})
"""
from .training import *  # noqa: F401,F403
from .training import (CheckpointError, ConstantLR, RunDir, Trainer, TrainingDiverged, WarmupCosine,  # noqa: F401
                       build_model, default_settings, evaluate_checkpoint, load_checkpoint, predict_logits,
                       read_meta, save_checkpoint, softmax_np, train_run)
