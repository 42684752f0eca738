"""Checkpoint files of a run: model weights with the metadata needed to rebuild the model, and the
training state that lets `--resume` continue bit for bit.

A model checkpoint (`best.safetensors`, `last.safetensors`) is a safetensors file whose arrays are the
model's ``state_dict`` (PyTorch names) and whose header metadata holds one JSON string under the key
``"tinycnn"``::

    {"format": 1, "model": "vgg", "ensemble": 3, "in_channels": 1, "num_classes": 2, "image_size": 28,
     "mean": [...], "std": [...], "class_names": [...], "task": "binary-class", "dataset": ..., "epoch": 7,
     "val_auc": 0.99, "version": "0.1.0"}

(``"tta"``: the test-time flips its predictions average over, "hflip", "hflip,vflip" or "none"; absent in
older checkpoints: none. ``"ensemble": K`` > 1: the file holds a `tinycnn.models.Ensemble` of K members, keys
``members.<k>.<name>``; absent or 1: a single model), so `evaluate --checkpoint` and `predict` rebuild the architecture and the input normalisation from the
file alone; ``"task"`` decides how logits become probabilities (per-label sigmoid for
``"multi-label, binary-class"``, softmax otherwise) and how an ensemble averages its members. The training state (`last.state.safetensors`) holds the model (``model.<name>``) and the
optimizer's arrays (``optim.<param index>.<name>``) with everything else (optimizer hyper-parameters,
scheduler state, RNG states, epoch, history, early-stopping counters) as JSON in the metadata, so one
atomic file is a complete, consistent resume point. Every write goes through `tinycnn.save`, which
writes a temp file and renames it: a killed run never leaves a half-written checkpoint.
"""
from __future__ import annotations

import json
import os

import numpy as np

from .. import __version__
from ..serialization import load, save

__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint", "read_meta", "build_model",
           "save_train_state", "load_train_state"]

FORMAT = 1
META_KEY = "tinycnn"


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupted, or not a tinycnn checkpoint."""


def to_jsonable(obj):
    """Recursively turn NumPy scalars/arrays and tuples into plain JSON values."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _dumps(obj) -> str:
    # allow_nan: a diverged val loss is recorded as NaN rather than crashing the checkpoint
    return json.dumps(to_jsonable(obj), allow_nan=True)


def save_checkpoint(path, model, meta: dict) -> None:
    """Write `model`'s state_dict and `meta` (JSON-able) to `path` atomically."""
    m = {"format": FORMAT, "version": __version__, **meta}
    save(dict(model.state_dict()), path, metadata={META_KEY: _dumps(m)})


def _read(path):
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    if os.path.isdir(path):
        raise CheckpointError(f"checkpoint must be a .safetensors file, got the folder {path} "
                              f"(use --run {path} or point at {os.path.join(path, 'best.safetensors')})")
    try:
        arrays = load(path)
        from safetensors import safe_open
        with safe_open(path, framework="numpy") as f:
            header = dict(f.metadata() or {})
    except (ValueError, OSError, Exception) as exc:  # safetensors raises its own error types
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"cannot read checkpoint {path}: corrupted or not a safetensors file ({msg})") from exc
    if META_KEY not in header:
        raise CheckpointError(f"{path} is a safetensors file without tinycnn metadata (key {META_KEY!r}); "
                              f"it was not written by tinycnn train")
    try:
        meta = json.loads(header[META_KEY])
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: its tinycnn metadata is not valid JSON ({exc})") from exc
    return arrays, meta


def read_meta(path) -> dict:
    """The metadata dict of a model checkpoint."""
    return _read(path)[1]


def load_checkpoint(path):
    """(state_dict, meta) of a model checkpoint; CheckpointError with a clear message otherwise."""
    arrays, meta = _read(path)
    for key in ("model", "in_channels", "num_classes"):
        if key not in meta:
            raise CheckpointError(f"{path}: metadata lacks {key!r}; expected keys model, in_channels, num_classes")
    return arrays, meta


def build_model(path, device: str = "cpu"):
    """Rebuild the model stored in checkpoint `path`: returns (model in eval mode, meta)."""
    from ..models import get_model

    state, meta = load_checkpoint(path)
    model = get_model(meta["model"], in_channels=int(meta["in_channels"]), num_classes=int(meta["num_classes"]),
                      ensemble=int(meta.get("ensemble", 1)),
                      multilabel=str(meta.get("task", "")).startswith("multi-label"))
    try:
        model.load_state_dict(state)
    except (KeyError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: weights do not fit model {meta['model']!r}: {exc}") from exc
    model.to(device)
    model.eval()
    return model, meta


# ---------------------------------------------------------------- training state (for --resume)
def _flatten_optimizer(sd: dict):
    arrays, scalars = {}, {}
    for idx, entry in sd.get("state", {}).items():
        for name, val in entry.items():
            if isinstance(val, np.ndarray) and val.ndim > 0:
                arrays[f"optim.{idx}.{name}"] = val
            elif hasattr(val, "numpy") and not isinstance(val, (int, float)):
                arrays[f"optim.{idx}.{name}"] = np.asarray(val.numpy())
            else:
                # 0-d arrays (e.g. a step count) keep their dtype through JSON
                a = np.asarray(val)
                scalars[f"{idx}.{name}"] = {"value": a.item(), "dtype": str(a.dtype), "array": isinstance(val, np.ndarray)}
    return arrays, {"scalars": scalars, "param_groups": sd.get("param_groups", [])}


def _unflatten_optimizer(arrays: dict, spec: dict) -> dict:
    state: dict = {}
    for key, val in arrays.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = val
    for key, s in spec["scalars"].items():
        idx, name = key.split(".", 1)
        v = np.asarray(s["value"], dtype=s["dtype"])
        state.setdefault(int(idx), {})[name] = v if s["array"] else v.item()
    return {"state": dict(sorted(state.items())), "param_groups": spec["param_groups"]}


def save_train_state(path, model, optimizer, info: dict, averaged=None) -> None:
    """One atomic file with model + optimizer arrays (+ the weight average's, ``ema.<name>``, when
    `averaged` is an AveragedModel) and `info` (epoch, scheduler, RNG, history...)."""
    arrays = {f"model.{k}": v for k, v in model.state_dict().items()}
    if averaged is not None:
        arrays.update({f"ema.{k}": v for k, v in averaged.state_dict().items()})
    opt_arrays, opt_spec = _flatten_optimizer(optimizer.state_dict())
    arrays.update(opt_arrays)
    meta = {"format": FORMAT, "version": __version__, "optimizer": opt_spec, **info}
    save(arrays, path, metadata={META_KEY: _dumps(meta)})


def load_train_state(path, model, optimizer, averaged=None) -> dict:
    """Restore model and optimizer (and `averaged`, an AveragedModel) from `path` in place; return the info dict."""
    arrays, meta = _read(path)
    model.load_state_dict({k[6:]: v for k, v in arrays.items() if k.startswith("model.")})
    if averaged is not None:
        ema = {k[4:]: v for k, v in arrays.items() if k.startswith("ema.")}
        if not ema:
            raise CheckpointError(f"{path} holds no weight average (ema.*): it was saved by a run without --ema")
        averaged.load_state_dict(ema)
    optimizer.load_state_dict(_unflatten_optimizer(arrays, meta["optimizer"]))
    return meta
