"""Optimizer base class: parameter groups, per-parameter state, zero_grad, state_dict round trips.

Updates are written in place into each parameter's array (``p.data``), so every holder of the
Parameter (the module, a second optimizer, a scheduler's view) sees them. Gradients are only
read: ``p.grad.data`` may be an array shared with other tensors and is never modified.
"""
from __future__ import annotations

import copy
import numbers

import numpy as np

from .. import backends
from ..autograd import enable_grad
from ..tensor import Tensor, zero_grads

__all__ = ["Optimizer", "required"]


class _Required:
    def __repr__(self):
        return "<required parameter>"


required = _Required()


def _number(value, name, low=None, low_inclusive=True, high=None, high_inclusive=True):
    """Check a hyper-parameter: a real number within the given bounds (ValueError naming it)."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    v = float(value)
    if low is not None and (v < low or (v == low and not low_inclusive)):
        raise ValueError(f"{name} must be {'>=' if low_inclusive else '>'} {low}, got {value}")
    if high is not None and (v > high or (v == high and not high_inclusive)):
        raise ValueError(f"{name} must be {'<=' if high_inclusive else '<'} {high}, got {value}")
    return value


class Optimizer:
    """Base of all optimizers (PyTorch's structure).

    params: an iterable of Tensors/Parameters, or of dicts ``{"params": [...], "lr": ..., ...}``
    (parameter groups; options missing from a group take the optimizer's defaults).
    `state` maps each parameter to a dict of its buffers (e.g. "exp_avg") and "step".
    """

    def __init__(self, params, defaults: dict):
        self.defaults = dict(defaults)
        self.state: dict = {}
        self.param_groups: list = []
        if isinstance(params, Tensor):
            raise TypeError("params must be an iterable of Tensors or of dicts, got a single Tensor "
                            "(pass model.parameters() or [tensor])")
        groups = list(params)
        if not groups:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for g in groups:
            self.add_param_group(g)

    # ------------------------------------------------------------------ groups
    def add_param_group(self, param_group: dict) -> None:
        """Add a group of parameters with its own options (defaults fill the rest)."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, got {type(param_group).__name__}")
        group = dict(param_group)
        params = group.get("params")
        if isinstance(params, Tensor):
            params = [params]
        elif isinstance(params, set):
            raise TypeError("params must be an ordered collection (a set has no stable order); use a list")
        params = list(params) if params is not None else []
        for i, p in enumerate(params):
            if not isinstance(p, Tensor):
                raise TypeError(f"optimizer can only optimize Tensors, but params[{i}] is {type(p).__name__}")
            if not p.is_leaf:
                raise ValueError(f"optimizer can only optimize leaf Tensors, but params[{i}] is the result "
                                 "of an operation (use .detach() and requires_grad_())")
        group["params"] = params
        for k, v in self.defaults.items():
            if v is required and k not in group:
                raise ValueError(f"parameter group didn't specify a value of required optimization parameter {k}")
            group.setdefault(k, v)
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if len({id(p) for p in params}) != len(params):
            raise ValueError("a parameter appears more than once in the same parameter group")
        if any(id(p) in seen for p in params):
            raise ValueError("some parameters appear in more than one parameter group")
        self._check_group(group)
        self.param_groups.append(group)

    def _check_group(self, group: dict) -> None:
        """Subclasses validate their hyper-parameters here (ValueError naming the option)."""
        _number(group["lr"], "lr", low=0.0)

    # ------------------------------------------------------------------ stepping
    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drop the gradients (None, PyTorch's default) or replace them by zeros."""
        zero_grads((p for g in self.param_groups for p in g["params"]), set_to_none)

    def step(self, closure=None):
        """One update of every parameter that has a gradient; returns closure() when given."""
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad.data
                if g.shape != p.data.shape:
                    raise ValueError(f"gradient shape {tuple(g.shape)} does not match parameter shape {p.shape}")
                if g.dtype != p.data.dtype:
                    g = g.astype(p.data.dtype)
                state = self.state.get(p)
                if state is None:
                    state = self.state[p] = {}
                self._update(p.data, g, state, group)
        return loss

    def _update(self, param, grad, state: dict, group: dict) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    # ------------------------------------------------------------------ state_dict
    def state_dict(self) -> dict:
        """``{"state": {index: {name: array}}, "param_groups": [{..., "params": [indices]}]}`` (copies).

        Parameters are numbered across groups in order; arrays are NumPy host copies; "step" is a
        0-d float64 array (torch keeps a 0-d float tensor).
        """
        index = {}
        groups = []
        for g in self.param_groups:
            packed = {k: copy.deepcopy(v) for k, v in g.items() if k != "params"}
            ids = []
            for p in g["params"]:
                index.setdefault(id(p), len(index))
                ids.append(index[id(p)])
            packed["params"] = ids
            groups.append(packed)
        state = {}
        for g in self.param_groups:
            for p in g["params"]:
                s = self.state.get(p)
                if s:
                    state[index[id(p)]] = {k: _to_numpy(v) for k, v in s.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore buffers and group options saved by `state_dict` (arrays cast to each parameter's dtype/device)."""
        if not isinstance(state_dict, dict) or "state" not in state_dict or "param_groups" not in state_dict:
            raise ValueError("state_dict must be a dict with keys 'state' and 'param_groups' "
                             f"(from Optimizer.state_dict()), got {type(state_dict).__name__}"
                             + (f" with keys {sorted(state_dict)}" if isinstance(state_dict, dict) else ""))
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"loaded state dict has {len(saved_groups)} parameter groups, "
                             f"this optimizer has {len(self.param_groups)}")
        for i, (g, sg) in enumerate(zip(self.param_groups, saved_groups)):
            if len(g["params"]) != len(sg["params"]):
                raise ValueError(f"parameter group {i}: loaded state dict has {len(sg['params'])} parameters, "
                                 f"this optimizer's group has {len(g['params'])}")
        id_map = {}
        for g, sg in zip(self.param_groups, saved_groups):
            for p, idx in zip(g["params"], sg["params"]):
                id_map[idx] = p
        new_state = {}
        for idx, s in state_dict["state"].items():
            key = int(idx)
            if key not in id_map:
                raise ValueError(f"state_dict['state'] has an entry for parameter index {idx}, "
                                 f"which no parameter group lists")
            p = id_map[key]
            new_state[p] = {k: self._restore(k, v, p) for k, v in s.items()}
        self.state = new_state
        for g, sg in zip(self.param_groups, saved_groups):
            for k, v in sg.items():
                if k != "params":
                    g[k] = copy.deepcopy(v)

    @staticmethod
    def _restore(name, value, p):
        if name == "step":
            return int(np.asarray(value).item())
        a = _to_numpy(value)
        if a.shape != p.shape:
            raise ValueError(f"optimizer state {name!r} has shape {a.shape}, its parameter has shape {p.shape}")
        a = a.astype(p.dtype, copy=True) if a.dtype.kind == "f" else a.copy()
        return backends.to_device(a, p.device)

    def __repr__(self):
        lines = [type(self).__name__ + " ("]
        for i, g in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for k in sorted(g):
                if k != "params":
                    lines.append(f"    {k}: {g[k]}")
        lines.append(")")
        return "\n".join(lines)


def _to_numpy(v):
    if isinstance(v, Tensor):
        v = v.data
    if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
        return np.asarray(v, dtype=np.float64)
    if backends.device_of(v) == "cuda":
        return v.get()
    if hasattr(v, "detach") and hasattr(v, "numpy"):   # a torch tensor
        return v.detach().cpu().numpy().copy()
    return np.array(v, copy=True)
