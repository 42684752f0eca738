"""Per-step learning-rate schedules for the Trainer.

`WarmupCosine` sets every parameter group's lr before each optimizer step:

    warm-up (step s < W):   lr(s) = base * (s + 1) / W
    cosine  (s >= W):       lr(s) = min_lr + (base - min_lr) * (1 + cos(pi * (s - W) / (T - W))) / 2

with T the total number of steps. It is a pure function of the step count, so resuming only needs the
step (stored in the train state). Epoch-level schedules ("step", "plateau") use
`tinycnn.optim.lr_scheduler` and save its `state_dict()`.
"""
from __future__ import annotations

import math

__all__ = ["WarmupCosine", "ConstantLR"]


class WarmupCosine:
    def __init__(self, optimizer, total_steps: int, warmup_steps: int = 0, min_lr_ratio: float = 0.0):
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        if not 0 <= warmup_steps < max(total_steps, 1) + 1:
            raise ValueError(f"warmup_steps must be in [0, total_steps={total_steps}], got {warmup_steps}")
        self.optimizer = optimizer
        self.total = int(total_steps)
        self.warmup = int(warmup_steps)
        self.min_ratio = float(min_lr_ratio)
        self.base_lrs = [g["lr"] for g in optimizer.param_groups]
        self.step_count = 0
        self.requested = (self.total, self.warmup)   # the schedule as built, which `resize` scales

    def resize(self, total_steps: int) -> None:
        """Fit the schedule to `total_steps` (a time budget shortened the run), keeping the warm-up's share
        of the schedule as built: the 2 warm-up epochs of a requested 30-epoch run become 0.2 epochs of a
        3-epoch run, not 2 of its 3 epochs."""
        req_total, req_warmup = self.requested
        self.total = max(int(total_steps), 1)
        self.warmup = min(req_warmup, int(round(req_warmup * self.total / max(req_total, 1))))

    def factor(self, s: int) -> float:
        if s < self.warmup:
            return (s + 1) / self.warmup
        span = max(self.total - self.warmup, 1)
        t = min((s - self.warmup) / span, 1.0)
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))

    def apply(self) -> None:
        """Set the lr for the coming step (call before optimizer.step())."""
        f = self.factor(self.step_count)
        for g, base in zip(self.optimizer.param_groups, self.base_lrs):
            g["lr"] = base * f

    def step(self) -> None:
        self.step_count += 1

    def get_last_lr(self):
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        return {"step_count": self.step_count, "base_lrs": list(self.base_lrs), "total": self.total,
                "warmup": self.warmup, "min_ratio": self.min_ratio}

    def load_state_dict(self, sd: dict) -> None:
        self.step_count = int(sd["step_count"])
        self.base_lrs = list(sd["base_lrs"])
        self.total = int(sd.get("total", self.total))  # a time budget may have shortened the run
        self.warmup = int(sd.get("warmup", self.warmup))


class ConstantLR:
    """No schedule: keeps the optimizer's lr (same interface as WarmupCosine)."""

    def __init__(self, optimizer):
        self.optimizer = optimizer

    def apply(self):
        pass

    def step(self):
        pass

    def get_last_lr(self):
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self):
        return {}

    def load_state_dict(self, sd):
        pass
