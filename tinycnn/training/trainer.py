"""The training loop: `Trainer.fit` with per-epoch validation, best-validation-AUC checkpointing (ties go to
the lower validation loss), early stopping, per-step LR schedules, class weights / focal loss, NaN/inf
detection and exact resume.

A Trainer works on NumPy datasets (`tinycnn.data.ArrayDataset`: float32 images (N, C, H, W) in [0, 1],
int64 labels) and a `tinycnn.nn.Module` classifier that outputs logits (N, classes). Inputs are
normalised with per-channel `mean`/`std` (computed on the training split) after augmentation.

Resume contract: the epoch order and augmentation come from `DataLoader(seed)` as a function of
(seed, epoch, batch) only; dropout draws from `tinycnn.random`, whose state is saved with the optimizer
and schedule after every epoch; so continuing from the state of epoch k gives bit-identical weights to
an uninterrupted run (on the CPU).

Ensembles (`tinycnn.models.Ensemble`): the members train side by side, each on its own DataLoader
(seed `member_seed(seed, k)`), with the sum of their losses, so each member is updated from its own loss
only, as in a separate run; validation, checkpoints and model selection use the averaged prediction.
"""
from __future__ import annotations

import math
import sys
import time

import numpy as np

import tinycnn
from tinycnn import random as trandom
from tinycnn.data import DataLoader
from tinycnn.data import transforms as T
from tinycnn.models.ensemble import average_outputs, member_seed
from tinycnn.nn import functional as F
from tinycnn.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from .checkpoint import load_train_state, save_checkpoint, save_train_state
from .schedules import WarmupCosine

__all__ = ["Trainer", "TrainingDiverged", "softmax_np", "sigmoid_np", "probs_from_logits", "is_multilabel", "MULTILABEL",
           "predict_logits", "parse_tta"]


# the run's length may still be re-fitted to the time budget after each of this many first epochs
BUDGET_FIT_EPOCHS = 8
# first epochs of at least PROBE_MIN_STEPS steps are also timed early, over steps PROBE_FIRST..PROBE_FIRST +
# max(PROBE_STEPS, 2 % of the epoch) (the first steps compile kernels); one image's forward pass at
# evaluation costs about EVAL_COST of its training step (measured 0.26 for the default VGG, batch 128 / 256)
PROBE_MIN_STEPS, PROBE_FIRST, PROBE_STEPS, EVAL_COST = 200, 5, 20, 0.3


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


def softmax_np(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def sigmoid_np(z: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-z)) without overflow: exp is only taken of -|z|."""
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


MULTILABEL = "multi-label, binary-class"


def is_multilabel(task) -> bool:
    """True for MedMNIST's "multi-label, binary-class" task (ChestMNIST): one independent yes/no per label."""
    return str(task or "").startswith("multi-label")


def probs_from_logits(logits: np.ndarray, task=None) -> np.ndarray:
    """Probabilities from logits (N, K): per-label sigmoid for a multi-label task, else softmax over classes."""
    return sigmoid_np(logits) if is_multilabel(task) else softmax_np(logits)


def _progress(iterable, total, desc, quiet, leave=False):
    if quiet or not sys.stdout.isatty():
        return iterable
    from tqdm import tqdm
    return tqdm(iterable, total=total, desc=desc, leave=leave, dynamic_ncols=True)


# test-time flips: the image axis each one reverses in (N, C, H, W)
FLIP_AXES = {"hflip": 3, "vflip": 2}


def parse_tta(tta) -> tuple:
    """Test-time flips from a setting: None, "", "none" -> (); "hflip", "vflip", "hflip,vflip" (or a list of
    those names) -> the flips, in FLIP_AXES order."""
    if tta is None:
        return ()
    names = [t.strip() for t in (tta.split(",") if isinstance(tta, str) else tta) if str(t).strip()]
    if names in ([], ["none"]):
        return ()
    unknown = [t for t in names if t not in FLIP_AXES]
    if unknown:
        raise ValueError(f"tta must be 'none' or a comma-separated list of {', '.join(FLIP_AXES)}, got {tta!r}")
    return tuple(t for t in FLIP_AXES if t in names)


def tta_name(tta) -> str:
    """The canonical spelling of a test-time flips setting: "none", "hflip", "vflip" or "hflip,vflip"."""
    return ",".join(parse_tta(tta)) or "none"


def flip_views(tta) -> list:
    """The image-axis tuples to reverse for each test-time view: every combination of the flips, identity
    first (hflip -> [(), (3,)]; hflip,vflip -> [(), (3,), (2,), (2, 3)])."""
    views = [()]
    for name in parse_tta(tta):
        views += [v + (FLIP_AXES[name],) for v in views]
    return [tuple(sorted(v)) for v in views]


def predict_logits(model, images, mean, std, batch_size=256, device="cpu", quiet=True, desc="predict", tta=None,
                   task=None):
    """Logits (N, classes) float64 of `images` (N, C, H, W in [0, 1]) in eval mode, no grad.

    tta: test-time flips ("hflip", "vflip", "hflip,vflip"; default none). The model then sees every
    combination of them (2 or 4 views) and the result is the output of the views' averaged probabilities,
    `tinycnn.models.ensemble.average_outputs` (task: softmax, or per-label sigmoid for a multi-label task):

        p(c | x) = (1/V) * sum_v softmax(f(flip_v(x)))_c

    For a model trained with those flips as augmentation, its prediction then no longer depends on which
    of the equally likely orientations an image came in.
    """
    norm = T.Normalize(mean, std)
    views = flip_views(tta)
    multilabel = is_multilabel(task)
    was = model.training
    model.eval()
    out = []
    n = len(images)
    try:
        with tinycnn.no_grad():
            starts = range(0, n, batch_size)
            for s in _progress(starts, len(starts), desc, quiet):
                xb = norm(np.ascontiguousarray(images[s:s + batch_size], dtype=np.float32))
                if len(views) == 1:
                    z = model(tinycnn.tensor(xb, device=device))
                else:
                    z = average_outputs([model(tinycnn.tensor(np.ascontiguousarray(np.flip(xb, v) if v else xb),
                                                              device=device)) for v in views], multilabel)
                out.append(z.numpy().astype(np.float64))
    finally:
        model.train(was)
    if not out:
        raise ValueError("images is empty: nothing to predict")
    return np.concatenate(out)


class Trainer:
    """Fit a classifier.

    model: Module returning logits. optimizer: a tinycnn.optim optimizer over the trainable parameters.
    schedule: per-step schedule with apply()/step() (WarmupCosine, ConstantLR) or an epoch-level
        `tinycnn.optim.lr_scheduler` object (stepped after each epoch; ReduceLROnPlateau gets val loss).
    loss: "ce" or "focal"; class_weights: None or (C,) array; label_smoothing (ce only); focal_gamma.
    mean, std: per-channel normalisation. augment: a transform or None. seed: shuffling/augmentation seed.
    task: the MedMNIST task name; None means single-label (`fit` sets it from its `task` argument).
    tta: test-time flips ("hflip", "vflip", "hflip,vflip"; None/"none": off) of validation, so that the
        model selected by validation AUC is judged as it will predict (`predict_logits`).

    Multi-label tasks ("multi-label, binary-class", labels (N, L) of 0/1): the model has one output per
    label and the loss is binary cross-entropy with logits, averaged over the N images and the L labels,

        loss = mean_{n,l} [ max(z, 0) - t z + log(1 + exp(-|z|)) ],   t = y (1 - eps) + eps / 2

    with eps = label_smoothing: each label's 0/1 target moves eps/2 towards 1/2, which is exactly what
    softmax cross-entropy with smoothing eps does to a 2-class problem, so a recipe's smoothing means the
    same for a binary task and for each label of a multi-label one. Probabilities are sigmoid(z) per
    label; validation loss is plain (unsmoothed) BCE. Class weights and focal loss are refused for
    multi-label tasks (there is no class to weight; a per-label focal loss is not implemented).
    """

    def __init__(self, model, optimizer, schedule, *, loss="ce", class_weights=None, label_smoothing=0.0,
                 focal_gamma=2.0, mean=(0.0,), std=(1.0,), augment=None, batch_size=128, seed=0,
                 device="cpu", quiet=False, frozen_bn=(), eval_batch_size=256, task=None, ema_decay=0.0,
                 mixup=0.0, tta=None):
        if loss not in ("ce", "focal"):
            raise ValueError(f"loss must be 'ce' or 'focal', got {loss!r}")
        self.model, self.optimizer, self.schedule = model, optimizer, schedule
        self.loss, self.label_smoothing, self.focal_gamma = loss, float(label_smoothing), float(focal_gamma)
        self.class_weights = None if class_weights is None else np.asarray(class_weights, dtype=np.float32)
        self.mean, self.std = [float(m) for m in mean], [float(s) for s in std]
        norm = T.Normalize(self.mean, self.std)
        self.train_transform = T.Compose([augment, norm]) if augment is not None else norm
        self.batch_size, self.seed, self.device, self.quiet = int(batch_size), int(seed), device, quiet
        self.frozen_bn = list(frozen_bn)
        self.eval_batch_size = eval_batch_size
        self.history: list[dict] = []
        self.epoch = 0              # epochs completed
        self.best_metric = -math.inf
        self.best_loss = math.inf   # validation loss of the best epoch (breaks ties in the metric)
        self.best_epoch = 0
        self.bad_epochs = 0
        self.target_epochs = None   # set by fit; may shrink under a time budget
        self.steps_per_epoch = None
        self.step_limit = None      # optimizer steps of the whole run, when a budget cuts even the first epoch
        self._w = None if self.class_weights is None else tinycnn.tensor(self.class_weights, device=device)
        self.task = task
        self._check_task()
        if not 0.0 <= float(ema_decay) < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1) (0 = no weight averaging), got {ema_decay}")
        self.ema_decay = float(ema_decay)
        if not (math.isfinite(float(mixup)) and float(mixup) >= 0.0):
            raise ValueError(f"mixup must be a Beta(alpha, alpha) parameter >= 0 (0 = off), got {mixup}")
        self.mixup = float(mixup)
        self.tta = tta_name(tta)    # test-time flips of validation (and of the checkpoints)
        # the exponential moving average of the weights, updated after every optimizer step; when on, it is
        # the model that is validated and saved (best/last checkpoints), while training updates `model`
        self.averaged = (AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(self.ema_decay), use_buffers=True)
                         if self.ema_decay else None)

    @property
    def eval_model(self):
        """The model that is validated and saved: the weight average if `ema_decay` is set, else `model`."""
        return self.averaged.module if self.averaged is not None else self.model

    @property
    def multilabel(self) -> bool:
        return is_multilabel(self.task)

    def _check_task(self):
        if not self.multilabel:
            return
        if self.loss == "focal":
            raise ValueError(f"--loss focal is not supported for multi-label tasks ({self.task}): "
                             f"use --loss ce (binary cross-entropy per label)")
        if self.class_weights is not None:
            raise ValueError(f"class weights are not supported for multi-label tasks ({self.task}): "
                             f"use --class-weights none")

    # ------------------------------------------------------------------ one epoch
    def _loss(self, logits, yb):
        if self.multilabel:
            eps = self.label_smoothing
            target = yb * (1.0 - eps) + eps / 2 if eps else yb
            return F.binary_cross_entropy_with_logits(logits, target)
        if self.loss == "focal":
            return F.focal_loss(logits, yb, gamma=self.focal_gamma, alpha=self._w)
        return F.cross_entropy(logits, yb, weight=self._w, label_smoothing=self.label_smoothing)

    def _mix(self, epoch: int, batch: int, member: int, n: int):
        """Mixup (Zhang et al. 2018) for one batch: lam ~ Beta(alpha, alpha) and a pairing permutation.

        The batch trains on lam x + (1 - lam) x[perm] with loss lam L(z, y) + (1 - lam) L(z, y[perm]).
        Both come from a generator seeded by (seed, epoch, batch, member), so a resumed run mixes exactly
        as an uninterrupted one.
        """
        rng = np.random.default_rng([self.seed, epoch, batch, member, 0x6D6978])
        return float(rng.beta(self.mixup, self.mixup)), rng.permutation(n)

    def _members(self):
        """The independently trained models: an Ensemble's members, else the model itself."""
        members = getattr(self.model, "members", None)
        return list(members) if members is not None else [self.model]

    def train_epoch(self, loaders, epoch: int, on_step=None) -> float:
        """One epoch; `loaders` is a DataLoader, or one per ensemble member (each its own order and
        augmentation). Each member's loss is computed on its own batch and the losses are summed, so each
        member's gradient, and hence its (element-wise) optimizer update, is exactly that of a separate run.
        on_step: called with the number of steps done after each step (the time-budget probe)."""
        if not isinstance(loaders, (list, tuple)):
            loaders = [loaders]
        members = self._members()
        if len(loaders) != len(members):
            raise ValueError(f"train_epoch needs one loader per ensemble member: {len(members)} members, "
                             f"{len(loaders)} loaders")
        self.model.train()
        for m in self.frozen_bn:
            m.eval()
        total, count = 0.0, 0
        per_step = hasattr(self.schedule, "apply")
        batches = zip(*[ld.iter_epoch(epoch) for ld in loaders])
        bar = _progress(batches, len(loaders[0]), f"epoch {epoch + 1}", self.quiet)
        for b, group in enumerate(bar):
            if per_step:
                self.schedule.apply()
            loss = None
            for k, (member, (xb, yb)) in enumerate(zip(members, group)):
                ydtype = np.float32 if self.multilabel else np.int64
                if self.mixup:
                    lam, perm = self._mix(epoch, b, k, len(xb))
                    xb = (lam * xb + (1.0 - lam) * xb[perm]).astype(xb.dtype, copy=False)
                z = member(tinycnn.tensor(xb, device=self.device))
                term = self._loss(z, tinycnn.tensor(np.asarray(yb, dtype=ydtype), device=self.device))
                if self.mixup:
                    other = self._loss(z, tinycnn.tensor(np.asarray(yb, dtype=ydtype)[perm], device=self.device))
                    term = term * lam + other * (1.0 - lam)
                loss = term if loss is None else loss + term
            value = float(loss.item()) / len(members)
            if not math.isfinite(value):
                lr = self.optimizer.param_groups[0]["lr"]
                raise TrainingDiverged(f"training stopped: loss became {value} at epoch {epoch + 1}, batch {b + 1} "
                                       f"(lr {lr:.3g}); lower --lr or check the data")
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            if self.averaged is not None:
                self.averaged.update_parameters(self.model)
            if per_step:
                self.schedule.step()
            if on_step is not None:
                on_step(b + 1)
            if self.step_limit is not None and epoch * len(loaders[0]) + b + 1 >= self.step_limit:
                break   # the time budget holds only part of this (first) epoch
            n = len(group[0][0])
            total += value * n
            count += n
            if bar is not batches:
                bar.set_postfix(loss=f"{total / count:.4f}")
        return total / max(count, 1)

    def evaluate(self, ds, task, desc="val"):
        """(loss, probs, {"auc", "acc"}) of a dataset; loss is plain (unweighted, unsmoothed) cross-entropy
        (binary cross-entropy averaged over images and labels, and per-label sigmoid probabilities, for a
        multi-label task)."""
        from tinycnn.metrics import medmnist_acc, medmnist_evaluate

        logits = predict_logits(self.eval_model, ds.images, self.mean, self.std, self.eval_batch_size, self.device,
                                quiet=self.quiet, desc=desc, tta=self.tta, task=task)
        if not np.all(np.isfinite(logits)):
            # the weights diverged although each batch's loss was finite (e.g. an extreme --lr)
            lr = self.optimizer.param_groups[0]["lr"]
            raise TrainingDiverged(f"training stopped: the model's {desc} outputs became NaN or infinite in epoch "
                                   f"{self.epoch + 1} (lr {lr:.3g}); lower --lr or check the data")
        z = tinycnn.tensor(logits)                 # float64: the loss ops compute it stably, no smoothing/weights
        if is_multilabel(task):
            y = np.asarray(ds.labels)
            loss = F.binary_cross_entropy_with_logits(z, tinycnn.tensor(y.astype(np.float64)))
        else:
            y = np.asarray(ds.labels).astype(np.int64)
            loss = F.cross_entropy(z, tinycnn.tensor(y))
        probs = probs_from_logits(logits, task)
        try:
            m = medmnist_evaluate(y, probs, task)
        except ValueError:  # AUC undefined (one class only, or a label never/always present, in a tiny split)
            m = {"auc": float("nan"), "acc": medmnist_acc(y, probs, task)}
        return float(loss.item()), probs, m

    # ------------------------------------------------------------------ fit
    def _fit_budget(self, time_budget, log, epoch_seconds=None):
        """Set the run's length (at most the requested epochs) so that training ends within `time_budget` s.

        Checked after each of the first `BUDGET_FIT_EPOCHS` epochs with the fastest epoch so far (the first
        one includes JIT compilation; a busy moment of a shared machine slows a few more, and the fastest
        one is what the machine can do), and, on data sets with long epochs, once early in the first epoch
        (`epoch_seconds`: an estimate from its first steps, see `_budget_probe`), so that a run the budget
        cuts to a few epochs follows its shortened schedule from the start. The cosine schedule is fitted
        to the new length, warm-up included (`WarmupCosine.resize`). The new length is part of the saved
        state, so resuming repeats it.
        """
        if not time_budget or self.epoch > BUDGET_FIT_EPOCHS or self.step_limit is not None:
            return
        spent = sum(h["seconds"] for h in self.history)
        per = epoch_seconds if epoch_seconds is not None else min(h["seconds"] for h in self.history)
        fit_epochs = self.epoch + int(max(time_budget - spent, 0) // per)
        # recomputed from the requested length each time: the first epoch (JIT compilation, cold caches)
        # alone would be too pessimistic, so a later, faster epoch may give some epochs back. At least the
        # epoch under way (or the next one): whether it still fits is decided by the stop check in `fit`.
        new = min(self.requested_epochs, max(fit_epochs, self.epoch + 1))
        if epoch_seconds is not None and fit_epochs == 0:
            # not even the first epoch fits (a huge data set or a slow machine): train the steps that do, with
            # the schedule fitted to them, as one shortened epoch
            self.step_limit = max(1, int(self.steps_per_epoch * time_budget / epoch_seconds))
            if log is not None:
                log(f"time budget {time_budget:.0f}s at {epoch_seconds:.0f}s/epoch: training {self.step_limit} of the "
                    f"first epoch's {self.steps_per_epoch} steps")
            self.target_epochs = 1
            if isinstance(self.schedule, WarmupCosine):
                self.schedule.resize(self.step_limit)
            return
        if new != self.target_epochs:
            if log is not None:
                log(f"time budget {time_budget:.0f}s at {per:.1f}s/epoch: training {new} epochs "
                    f"(requested {self.requested_epochs})")
            self.target_epochs = new
            if isinstance(self.schedule, WarmupCosine):
                self.schedule.resize(new * self.steps_per_epoch)

    def _budget_probe(self, time_budget, log, eval_images: int):
        """A callback for `train_epoch` that times the first epoch's steps PROBE_FIRST to PROBE_FIRST +
        max(PROBE_STEPS, 2 % of the epoch) and fits the run to the budget from them (validation included);
        None when epochs are short enough to be fitted at their end."""
        last = PROBE_FIRST + max(PROBE_STEPS, self.steps_per_epoch // 50)
        if not time_budget or self.epoch != 0 or self.steps_per_epoch < PROBE_MIN_STEPS:
            return None
        start = []

        def on_step(done):
            if done == PROBE_FIRST:
                start.append(time.perf_counter())
            elif done == last:
                per_step = (time.perf_counter() - start[0]) / (last - PROBE_FIRST)
                images = self.steps_per_epoch * self.batch_size
                # validation: a forward pass per image and test-time view, about EVAL_COST of a training
                # step's cost per image each
                eval_cost = EVAL_COST * len(flip_views(self.tta)) * eval_images / images
                self._fit_budget(time_budget, log, epoch_seconds=per_step * self.steps_per_epoch * (1 + eval_cost))
        return on_step

    def fit(self, train, val, epochs: int, task: str, run=None, patience: int = 0, stop_after=None, log=print,
            time_budget=None):
        """Train for `epochs` epochs (continuing from `self.epoch`), validating after each.

        run: a RunDir (or None) to write best/last checkpoints, the train state and history after each epoch.
        patience: stop when validation AUC has not improved for this many epochs (0 = never).
        stop_after: end this call after that many epochs in total (tests use it to simulate a killed run).
        time_budget: seconds of training allowed; fewer epochs are run when the first epochs show that
            `epochs` would not fit (None = no limit).
        """
        if task is not None and self.task is None:
            self.task = task
            self._check_task()
        loaders = [DataLoader(train, batch_size=self.batch_size, shuffle=True, seed=member_seed(self.seed, k),
                              transform=self.train_transform, drop_last=len(train) > self.batch_size)
                   for k in range(len(self._members()))]
        self.steps_per_epoch = len(loaders[0])
        self.requested_epochs = int(epochs)
        if self.target_epochs is None:
            self.target_epochs = int(epochs)
        while self.epoch < self.target_epochs:
            if stop_after is not None and self.epoch >= stop_after:
                break
            t0 = time.perf_counter()
            e = self.epoch
            train_loss = self.train_epoch(loaders, e, on_step=self._budget_probe(time_budget, log, len(val)))
            val_loss, _, vm = self.evaluate(val, task)
            lr = self.optimizer.param_groups[0]["lr"]
            if not hasattr(self.schedule, "apply") and self.schedule is not None:
                if type(self.schedule).__name__ == "ReduceLROnPlateau":
                    self.schedule.step(val_loss)
                else:
                    self.schedule.step()
            metric = vm["auc"] if math.isfinite(vm["auc"]) else vm["acc"]
            # a tie in validation AUC goes to the lower validation loss: small validation splits tie often
            # (AUC takes few values; on an easy set it is 1.0 from the first epoch on, when the predicted
            # classes are still wrong), and the loss still tells a better-fitted model
            improved = metric > self.best_metric or (metric == self.best_metric and val_loss < self.best_loss)
            if improved:
                self.best_metric, self.best_loss, self.best_epoch, self.bad_epochs = metric, val_loss, e + 1, 0
            else:
                self.bad_epochs += 1
            self.epoch = e + 1
            row = {"epoch": e + 1, "train_loss": train_loss, "val_loss": val_loss, "val_acc": vm["acc"],
                   "val_auc": vm["auc"], "lr": lr, "seconds": time.perf_counter() - t0}
            self.history.append(row)
            self._fit_budget(time_budget, log)
            if run is not None:
                run.end_epoch(self, improved)
            if log is not None:
                log(f"epoch {e + 1}/{self.target_epochs}  train loss {train_loss:.4f}  val loss {val_loss:.4f}  "
                    f"val acc {vm['acc']:.4f}  val auc {vm['auc']:.4f}  lr {lr:.2e}  {row['seconds']:.1f}s"
                    + ("  *best*" if improved else ""))
            if time_budget and self.epoch < self.target_epochs:
                spent = sum(h["seconds"] for h in self.history)
                if spent + row["seconds"] > time_budget * 1.05:
                    # the machine got slower than the first epochs promised: stop, keeping the best checkpoint
                    if log is not None:
                        log(f"time budget {time_budget:.0f}s reached after {spent:.0f}s: stopping at epoch {self.epoch}")
                    break
            if patience and self.bad_epochs >= patience:
                if log is not None:
                    log(f"early stopping: validation AUC did not improve for {patience} epochs "
                        f"(best {self.best_metric:.4f} at epoch {self.best_epoch})")
                break
        return self.history

    # ------------------------------------------------------------------ state for resume
    def state_info(self) -> dict:
        sched = self.schedule.state_dict() if self.schedule is not None else {}
        return {"epoch": self.epoch, "history": self.history, "best_metric": self.best_metric,
                "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs, "scheduler": sched,
                "rng": trandom.get_state(), "data_seed": self.seed,
                "target_epochs": self.target_epochs}

    def save_state(self, path):
        save_train_state(path, self.model, self.optimizer, self.state_info(), averaged=self.averaged)

    def load_state(self, path):
        info = load_train_state(path, self.model, self.optimizer, averaged=self.averaged)
        self.epoch = int(info["epoch"])
        self.history = list(info["history"])
        self.best_metric = float(info["best_metric"])
        self.best_epoch = int(info["best_epoch"])
        best_rows = [h for h in self.history if h.get("epoch") == self.best_epoch]
        self.best_loss = float(best_rows[0]["val_loss"]) if best_rows else math.inf
        self.bad_epochs = int(info["bad_epochs"])
        if self.schedule is not None and info.get("scheduler"):
            self.schedule.load_state_dict(info["scheduler"])
        trandom.set_state(info["rng"])
        self.seed = int(info["data_seed"])
        self.target_epochs = info.get("target_epochs")
        return info

    def save_model(self, path, meta):
        save_checkpoint(path, self.eval_model, meta)
