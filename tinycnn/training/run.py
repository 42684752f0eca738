"""A complete training run as the CLI does it: settings -> data -> model -> fit -> test metrics -> run directory.

Multi-label datasets ("multi-label, binary-class", e.g. ChestMNIST, or `synthetic-multilabel`) train with
per-label binary cross-entropy and report per-label sigmoid probabilities (see `Trainer`); roc.png then
has one curve per label and confusion.png one 2x2 panel per label.

Run directory (see docs/cli.md): config.json, best.safetensors, last.safetensors, last.state.safetensors,
history.csv, metrics.json, curves.png, roc.png, confusion.png. Every file is written atomically.
"""
from __future__ import annotations

import csv
import io
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

import tinycnn
from tinycnn import backends
from tinycnn.serialization import atomic_write_bytes

from .checkpoint import build_model, load_checkpoint, to_jsonable
from .recipes import default_settings, describe, augment_flips
from .schedules import ConstantLR, WarmupCosine
from .trainer import Trainer, is_multilabel, predict_logits, probs_from_logits

__all__ = ["TRAIN_DEFAULTS", "RunDir", "train_run", "evaluate_checkpoint", "resolve_settings",
           "load_data", "HISTORY_COLUMNS"]

# seconds of training allowed when the recipe picks the number of epochs: with evaluation and plots a
# default run stays under 15 minutes on a 2-core CPU (`--time-budget` overrides, `--epochs` disables it)
DEFAULT_TIME_BUDGET = 780.0

HISTORY_COLUMNS = ("epoch", "train_loss", "val_loss", "val_acc", "val_auc", "lr", "seconds")

# the seed of an image folder's 80/10/10 split: fixed (docs/cli.md), not the training --seed, so that every
# run and every `evaluate --dataset DIR` of that folder has the same test images
FOLDER_SPLIT_SEED = 0

# settings that do not depend on the data (None = chosen by the recipe)
TRAIN_DEFAULTS = {
    "dataset": "synthetic", "data_dir": None, "model": None, "epochs": None, "batch_size": None, "lr": None,
    "optimizer": None, "weight_decay": None, "momentum": None, "scheduler": None, "warmup_epochs": None,
    "loss": None, "focal_gamma": None, "label_smoothing": None, "class_weights": None, "augment": None,
    "patience": None, "device": "cpu", "seed": 0, "out": None, "init_from": None, "freeze": None,
    "subset": None, "image_size": 28, "eval_batch_size": 256, "time_budget": None, "ensemble": None,
    "ema": None, "mixup": None, "tta": None,
}


def write_json(path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(to_jsonable(obj), indent=2, allow_nan=True) + "\n").encode())


class RunDir:
    """Writes the files of a run directory as training goes."""

    def __init__(self, path, meta: dict):
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"--out {path}: expected a run directory, got an existing file")
        self.path.mkdir(parents=True, exist_ok=True)
        self.meta = meta  # model metadata stored in the checkpoints

    def file(self, name) -> Path:
        return self.path / name

    def write_history(self, history):
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(HISTORY_COLUMNS)
        for h in history:
            w.writerow([h["epoch"]] + [repr(float(h[k])) if k != "seconds" else f"{h[k]:.3f}"
                                       for k in HISTORY_COLUMNS[1:]])
        atomic_write_bytes(self.file("history.csv"), buf.getvalue().encode())

    def end_epoch(self, trainer: Trainer, improved: bool):
        h = trainer.history[-1]
        meta = {**self.meta, "epoch": trainer.epoch, "val_auc": h["val_auc"], "val_acc": h["val_acc"]}
        if improved:
            trainer.save_model(self.file("best.safetensors"), meta)
        trainer.save_model(self.file("last.safetensors"), meta)
        # the state file is written last: when it exists, the files it refers to are complete
        trainer.save_state(self.file("last.state.safetensors"))
        self.write_history(trainer.history)


def download_progress(quiet) -> bool | None:
    """`progress` for a dataset download: like every progress bar, none with --quiet or when stdout is not a
    terminal (None: tqdm's own check of stderr)."""
    return False if quiet or not sys.stdout.isatty() else None


def load_data(settings, progress=None):
    """Load the dataset named in settings; optional `subset` keeps the first N images of each split."""
    from tinycnn import data

    kw = {}
    synthetic = str(settings["dataset"]).lower() in ("synthetic", data.SYNTHETIC_MULTILABEL)
    if synthetic and settings.get("subset"):
        n = int(settings["subset"])
        kw["synthetic_sizes"] = (n, max(n // 4, 20), max(n // 4, 20))
    # the training seed picks the synthetic images; a folder is always split with the same seed
    seed = settings.get("seed", 0) if synthetic else FOLDER_SPLIT_SEED
    ds = data.load_dataset(settings["dataset"], data_dir=settings.get("data_dir"), size=settings.get("image_size", 28),
                           seed=seed, progress=progress, **kw)
    if settings.get("subset"):
        n = int(settings["subset"])
        ds = data.DatasetSplits(ds.train.subset(np.arange(min(n, len(ds.train)))),
                                ds.val.subset(np.arange(min(n, len(ds.val)))),
                                ds.test.subset(np.arange(min(n, len(ds.test)))), ds.info)
    return ds


def resolve_settings(user: dict, ds) -> dict:
    """User settings with every None filled in from the recipe for this dataset."""
    recipe = default_settings(ds.info, ds.train.labels)
    if user.get("augment") is not None:
        recipe["tta"] = augment_flips(user["augment"])   # the flips the run trains with, not the recipe's
    s = {**TRAIN_DEFAULTS, **{k: v for k, v in user.items()}}
    for k, v in recipe.items():
        if s.get(k) is None:
            s[k] = v
    return s


def _make_optimizer(s, params):
    opt = s["optimizer"].lower()
    O = tinycnn.optim
    if opt == "adamw":
        return O.AdamW(params, lr=s["lr"], weight_decay=s["weight_decay"])
    if opt == "adam":
        return O.Adam(params, lr=s["lr"], weight_decay=s["weight_decay"])
    if opt == "sgd":
        return O.SGD(params, lr=s["lr"], momentum=s["momentum"], weight_decay=s["weight_decay"], nesterov=s["momentum"] > 0)
    if opt == "rmsprop":
        return O.RMSprop(params, lr=s["lr"], momentum=s["momentum"])
    if opt == "adagrad":
        return O.Adagrad(params, lr=s["lr"], weight_decay=s["weight_decay"])
    raise ValueError(f"unknown optimizer {s['optimizer']!r}: expected adamw, adam, sgd, rmsprop or adagrad")


def _make_schedule(s, optimizer, steps_per_epoch):
    name = s["scheduler"].lower()
    total = steps_per_epoch * s["epochs"]
    if name == "cosine":
        return WarmupCosine(optimizer, total, min(steps_per_epoch * s["warmup_epochs"], total))
    if name in ("none", "constant"):
        return ConstantLR(optimizer)
    L = tinycnn.optim.lr_scheduler
    if name == "step":
        return L.StepLR(optimizer, step_size=max(1, s["epochs"] // 3), gamma=0.1)
    if name == "plateau":
        return L.ReduceLROnPlateau(optimizer, mode="min", factor=0.1, patience=3)
    raise ValueError(f"unknown scheduler {s['scheduler']!r}: expected cosine, step, plateau or none")


def _class_weights(s, ds):
    mode = str(s["class_weights"]).lower()
    if mode in ("none", "false", "0"):
        return None
    if is_multilabel(ds.info.task):
        raise ValueError(f"--class-weights {s['class_weights']} is not supported for the multi-label dataset "
                         f"{ds.info.name!r} (one sigmoid per label, no classes to balance): use --class-weights none")
    counts = np.bincount(ds.train.labels.astype(np.int64), minlength=ds.info.n_classes).astype(np.float64)
    if mode in ("balanced", "auto", "true"):
        return len(ds.train) / (len(counts) * np.maximum(counts, 1))
    raise ValueError(f"class_weights must be 'balanced' or 'none', got {s['class_weights']!r}")


def _member_state(state: dict, meta: dict, k: int) -> dict:
    """The weights for member k taken from a checkpoint: a single model's, or member k mod K of an ensemble's."""
    n = int(meta.get("ensemble", 1))
    if n <= 1:
        return state
    prefix = f"members.{k % n}."
    return {key[len(prefix):]: v for key, v in state.items() if key.startswith(prefix)}


def _transfer(model, s, log):
    """Load `init_from` weights into `model` (a new head when the class count differs); freeze prefixes.

    For an ensemble, every member gets the pretrained weights (member k those of the checkpoint's member
    k mod K when the checkpoint is an ensemble too), and prefixes name layers inside a member ("features")."""
    members = list(model.members) if hasattr(model, "members") else [model]
    frozen_bn = []
    if s.get("init_from"):
        state, meta = load_checkpoint(s["init_from"])
        if meta.get("in_channels") != s["in_channels"]:
            raise ValueError(f"--init-from {s['init_from']} was trained on {meta.get('in_channels')}-channel images, "
                             f"this dataset has {s['in_channels']}")
        if meta.get("model") != s["model"]:
            raise ValueError(f"--init-from {s['init_from']} holds model {meta.get('model')!r}, not --model {s['model']!r}")
        for k, member in enumerate(members):
            own = member.state_dict()
            src = _member_state(state, meta, k)
            keep = {key: v for key, v in src.items() if key in own and tuple(own[key].shape) == tuple(v.shape)}
            member.load_state_dict({**own, **keep})
        skipped = sorted(set(own) - set(keep))
        log(f"initialised from {s['init_from']}: {len(keep)} tensors loaded"
            + (f" into each of {len(members)} members" if len(members) > 1 else "")
            + (f", new (random) {', '.join(skipped)}" if skipped else ""))
    if s.get("freeze"):
        prefixes = [p.strip() for p in str(s["freeze"]).split(",") if p.strip()]
        names = [n for n, _ in members[0].named_parameters()]
        for p in prefixes:
            if not any(n == p or n.startswith(p + ".") or n.startswith(p) for n in names):
                raise ValueError(f"--freeze prefix {p!r} matches no parameter; parameter names start with: "
                                 f"{', '.join(sorted({n.split('.')[0] for n in names}))}")
        n_frozen = 0
        for member in members:
            for n, prm in member.named_parameters():
                if any(n.startswith(p) for p in prefixes):
                    prm.requires_grad = False
                    n_frozen += 1
            for n, m in member.named_modules():
                if n and any(n.startswith(p) for p in prefixes) and type(m).__name__.startswith("BatchNorm"):
                    frozen_bn.append(m)  # frozen layers keep their running statistics too
        log(f"froze {n_frozen} parameter tensors ({', '.join(prefixes)})")
    return frozen_bn


def _environment(device):
    return {"version": tinycnn.__version__, "python": platform.python_version(), "numpy": np.__version__,
            "platform": platform.platform(), "device": device,
            "kernel_family": backends.get_gpu_kernels() if device == "cuda" else backends.get_cpu_kernels()}


def train_run(user_settings: dict, log=print, quiet=False, stop_after=None, data=None) -> dict:
    """Run training as `tinycnn train` does; returns {"run_dir", "metrics", "history", "settings"}.

    With settings["resume"], the run directory's config.json is used and training continues from
    last.state.safetensors. `data`: a `DatasetSplits` to train, validate and test on instead of loading
    settings["dataset"] (e.g. the folds of examples/recipe_cv.py); the recipe is then chosen from its
    training split, and the checkpoint still names settings["dataset"] as its data.
    """
    from tinycnn.models import canonical_name, get_model

    log = log or (lambda text: None)
    resume = bool(user_settings.get("resume"))
    out = user_settings.get("out")
    if resume:
        if not out:
            raise ValueError("--resume needs --out DIR of the interrupted run")
        cfg_path = Path(out) / "config.json"
        if not cfg_path.exists():
            raise ValueError(f"--resume: no config.json in {out}; is it the run directory of an earlier tinycnn train?")
        stored = json.loads(cfg_path.read_text())
        s = dict(stored["settings"])
        s["out"] = out
        if not (Path(out) / "last.state.safetensors").exists():
            resume = False  # killed before the first epoch ended: start over with the same settings
            log("no completed epoch to resume from: starting the run from the beginning")
    else:
        s = dict(user_settings)
        s.pop("resume", None)
    tinycnn.manual_seed(int(s.get("seed") or 0))
    ds = data if data is not None else load_data({**TRAIN_DEFAULTS, **s}, progress=download_progress(quiet))
    if not resume and "in_channels" not in s:
        s["epochs_given"] = s.get("epochs") is not None
        s = resolve_settings(s, ds)
    s["model"] = canonical_name(s["model"])
    s["in_channels"] = ds.info.n_channels
    s["num_classes"] = ds.info.n_classes
    if s.get("time_budget") is None and not s.get("epochs_given"):
        s["time_budget"] = DEFAULT_TIME_BUDGET  # the budget the run has, recorded as such in config.json
    if s["out"] is None:
        s["out"] = os.path.join("runs", f"{Path(str(s['dataset'])).name}-{s['model']}-seed{s['seed']}")
    device = s["device"]
    if device == "cuda" and not tinycnn.cuda.is_available():
        raise RuntimeError("--device cuda: no usable NVIDIA GPU with CuPy found "
                           "(install tinycnn[cuda13] or tinycnn[cuda12] on a GPU machine, or use --device cpu)")
    log(f"dataset {ds.info.name}: {describe(ds.info, ds.train.labels)}; "
        f"val {len(ds.val)}, test {len(ds.test)}")

    mean = ds.train.images.mean(axis=(0, 2, 3)).astype(np.float64).tolist()
    std = np.maximum(ds.train.images.std(axis=(0, 2, 3)), 1e-6).astype(np.float64).tolist()
    model = get_model(s["model"], in_channels=s["in_channels"], num_classes=s["num_classes"],
                      ensemble=int(s.get("ensemble") or 1), multilabel=is_multilabel(ds.info.task))
    frozen_bn = _transfer(model, s, log)
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = _make_optimizer(s, params)
    drop_last = len(ds.train) > s["batch_size"]
    steps = len(ds.train) // s["batch_size"] if drop_last else 1
    schedule = _make_schedule(s, optimizer, steps)
    from tinycnn.data import transforms as T
    augment = T.parse_augment(s["augment"])
    weights = _class_weights(s, ds)
    trainer = Trainer(model, optimizer, schedule, loss=s["loss"], class_weights=weights,
                      label_smoothing=s["label_smoothing"], focal_gamma=s["focal_gamma"], mean=mean, std=std,
                      augment=augment, batch_size=s["batch_size"], seed=s["seed"], device=device, quiet=quiet,
                      frozen_bn=frozen_bn, eval_batch_size=s["eval_batch_size"], task=ds.info.task,
                      ema_decay=float(s.get("ema") or 0.0), mixup=float(s.get("mixup") or 0.0), tta=s.get("tta"))
    meta = {"model": s["model"], "ensemble": int(s.get("ensemble") or 1), "tta": trainer.tta,
            "in_channels": s["in_channels"], "num_classes": s["num_classes"],
            "image_size": int(ds.info.image_size), "mean": mean, "std": std,
            "class_names": list(ds.info.class_names), "task": ds.info.task, "dataset": ds.info.name,
            "seed": s["seed"],
            "data": {"dataset": str(s["dataset"]), "data_dir": s.get("data_dir"), "subset": s.get("subset"),
                     "seed": s["seed"], "image_size": s.get("image_size", 28)}}
    run = RunDir(s["out"], meta)
    if resume:
        info = trainer.load_state(run.file("last.state.safetensors"))
        log(f"resuming {s['out']} after epoch {info['epoch']} of {s['epochs']}")
    else:
        config = {"settings": s, "dataset": ds.info.to_dict(), "normalization": {"mean": mean, "std": std},
                  "class_weights": None if weights is None else weights.tolist(), **_environment(device),
                  "seed": s["seed"], "command": "tinycnn train", "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
        write_json(run.file("config.json"), config)
    t0 = time.perf_counter()
    trainer.fit(ds.train, ds.val, s["epochs"], ds.info.task, run=run, patience=s["patience"],
                stop_after=stop_after, log=None if quiet else log, time_budget=s.get("time_budget"))
    if trainer.epoch < trainer.target_epochs and stop_after is not None and trainer.epoch >= stop_after:
        return {"run_dir": str(run.path), "metrics": None, "history": trainer.history, "settings": s,
                "stopped": True}
    metrics = finish_run(run, ds, device, quiet=quiet, log=log)
    metrics["train_seconds"] = time.perf_counter() - t0
    write_json(run.file("metrics.json"), metrics)
    return {"run_dir": str(run.path), "metrics": metrics, "history": trainer.history, "settings": s}


def finish_run(run: RunDir, ds, device, quiet=False, log=print) -> dict:
    """Test metrics of best.safetensors, metrics.json and the three plots."""
    from tinycnn import report
    from tinycnn.metrics import classification_report

    model, meta = build_model(run.file("best.safetensors"), device=device)
    probs = predict_probs(model, meta, ds.test.images, device=device, quiet=quiet)
    metrics = classification_report(ds.test.labels, probs, task=ds.info.task, class_names=ds.info.class_names)
    val_auc = meta.get("val_auc")
    if val_auc is not None and not np.isfinite(val_auc):
        val_auc = None  # undefined (one class in the val split): null, as NaN is not JSON
    metrics.update({"split": "test", "checkpoint": "best.safetensors", "best_epoch": meta.get("epoch"),
                    "val_auc": val_auc, "dataset": ds.info.name})
    write_json(run.file("metrics.json"), metrics)
    import csv as _csv
    with open(run.file("history.csv")) as f:
        hist = [{k: float(v) for k, v in row.items()} for row in _csv.DictReader(f)]
    report.plot_curves(hist, run.file("curves.png"), title=f"{ds.info.name}: training curves")
    report.plot_roc(ds.test.labels, probs, run.file("roc.png"), ds.info.class_names,
                    title=f"{ds.info.name}: ROC (test, best val-AUC checkpoint)")
    if is_multilabel(ds.info.task):
        report.plot_confusion_multilabel(metrics["confusion_matrix"], run.file("confusion.png"), ds.info.class_names,
                                         title=f"{ds.info.name}: per-label confusion (test, p >= 0.5)")
    else:
        report.plot_confusion(metrics["confusion_matrix"], run.file("confusion.png"), ds.info.class_names,
                              title=f"{ds.info.name}: confusion matrix (test)")
    if log:
        log(format_metrics(metrics))
    return metrics


def predict_probs(model, meta, images, device="cpu", quiet=True, batch_size=256, tta=None):
    """Probabilities (N, classes) of a checkpoint's model: softmax of the logits, or for a multi-label
    checkpoint (meta["task"] "multi-label, ...") one sigmoid per label, (N, L), not summing to 1.
    Averaged over the test-time flips `tta` (default: the checkpoint's, meta["tta"]; "none" for none)."""
    tta = meta.get("tta") if tta is None else tta
    logits = predict_logits(model, images, meta["mean"], meta["std"], batch_size, device, quiet=quiet, tta=tta,
                            task=meta.get("task"))
    return probs_from_logits(logits, meta.get("task"))


def format_metrics(m: dict) -> str:
    keys = ("acc", "auc", "precision", "recall", "f1", "sensitivity", "specificity")
    vals = "  ".join(f"{k} {m[k]:.4f}" if isinstance(m.get(k), (int, float)) and m[k] is not None else f"{k} n/a"
                     for k in keys)
    return f"{m.get('split', 'test')} ({m['n']} images): {vals}"


def evaluate_checkpoint(checkpoint, dataset=None, split="test", data_dir=None, device="cpu", quiet=True, tta=None):
    """(metrics, probs, labels) of a checkpoint on a dataset split (default: the data it was trained on, with the
    training --subset; a named dataset is used in full); `tta` overrides the checkpoint's test-time flips."""
    from tinycnn.metrics import classification_report

    model, meta = build_model(checkpoint, device=device)
    source = meta.get("data", {})
    if dataset is None:
        # the training data: same source, seed (the synthetic images depend on it) and subset
        spec = {**TRAIN_DEFAULTS, **source, "data_dir": data_dir or source.get("data_dir")}
    elif str(dataset) == str(source.get("dataset")):
        # the named dataset in full (a training --subset does not carry over), its images as in training
        spec = {**TRAIN_DEFAULTS, **source, "data_dir": data_dir or source.get("data_dir"), "subset": None}
    else:
        spec = {**TRAIN_DEFAULTS, "dataset": dataset, "data_dir": data_dir, "image_size": meta.get("image_size", 28)}
    if spec.get("dataset") is None:
        raise ValueError(f"checkpoint {checkpoint} does not name its dataset: pass --dataset NAME|DIR")
    ds = load_data(spec, progress=download_progress(quiet))
    if ds.info.n_channels != meta["in_channels"]:
        raise ValueError(f"checkpoint {checkpoint} expects {meta['in_channels']}-channel images, "
                         f"dataset {ds.info.name!r} has {ds.info.n_channels}")
    if ds.info.n_classes != meta["num_classes"]:
        raise ValueError(f"checkpoint {checkpoint} has {meta['num_classes']} classes, "
                         f"dataset {ds.info.name!r} has {ds.info.n_classes}")
    if is_multilabel(meta.get("task")) != is_multilabel(ds.info.task):
        raise ValueError(f"checkpoint {checkpoint} was trained for task {meta.get('task')!r}, "
                         f"dataset {ds.info.name!r} is {ds.info.task!r}")
    part = ds.split(split)
    probs = predict_probs(model, meta, part.images, device=device, quiet=quiet, tta=tta)
    m = classification_report(part.labels, probs, task=ds.info.task, class_names=ds.info.class_names)
    m.update({"split": split, "dataset": ds.info.name, "checkpoint": str(checkpoint)})
    return m, probs, part.labels


