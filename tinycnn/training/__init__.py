"""tinycnn.training: the Trainer, default recipes, checkpoints and complete runs (also as `tinycnn.train`)."""
from .checkpoint import (CheckpointError, build_model, load_checkpoint, load_train_state, read_meta,  # noqa: F401
                         save_checkpoint, save_train_state)
from .recipes import default_settings  # noqa: F401
from .run import RunDir, evaluate_checkpoint, train_run  # noqa: F401
from .schedules import ConstantLR, WarmupCosine  # noqa: F401
from .trainer import Trainer, TrainingDiverged, predict_logits, softmax_np  # noqa: F401
from .simple import evaluate, fit, predict  # noqa: F401
