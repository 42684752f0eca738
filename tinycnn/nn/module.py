"""Module: the base class of layers and models, with PyTorch's registration and state_dict rules.

Attributes assigned on a Module are sorted by type, as in torch.nn.Module:
a `Parameter` goes to `_parameters`, a `Module` to `_modules`, and a Tensor assigned to a name
already registered with `register_buffer` to `_buffers`. `state_dict()` walks them in
registration order and names entries `<child>.<grandchild>.<name>`, which gives exactly PyTorch's
keys for the same architecture (`0.weight`, `features.1.running_var`, `bn.num_batches_tracked`).
"""
from __future__ import annotations

from collections import OrderedDict, namedtuple

import numpy as np

from .. import backends
from ..autograd import no_grad
from ..tensor import Tensor, as_dtype, looks_like_dtype, zero_grads
from .parameter import Parameter

__all__ = ["Module", "RemovableHandle", "StateDictError", "IncompatibleKeys"]


class StateDictError(ValueError, RuntimeError):
    """load_state_dict problems (missing/unexpected keys, wrong shapes).

    A ValueError per the project's error rules, and a RuntimeError as in PyTorch, so code written
    for either catches it.
    """


IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


class RemovableHandle:
    """Returned by the hook registration methods; `remove()` unregisters the hook."""

    _next_id = 0

    def __init__(self, hooks: dict):
        self._hooks = hooks
        self.id = RemovableHandle._next_id
        RemovableHandle._next_id += 1

    def remove(self) -> None:
        self._hooks.pop(self.id, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()
        return False


def _addindent(text: str, spaces: int) -> str:
    lines = text.split("\n")
    if len(lines) == 1:
        return text
    return lines[0] + "\n" + "\n".join(" " * spaces + line for line in lines[1:])


def _as_host_array(value, key):
    """A state_dict value (NumPy/CuPy array, Tensor, number, torch tensor) as an array."""
    if isinstance(value, Tensor):
        return value.data
    if backends.device_of(value) == "cuda":
        return value
    if hasattr(value, "detach") and hasattr(value, "cpu") and hasattr(value, "numpy"):
        return value.detach().cpu().numpy()     # a torch tensor, without importing torch
    try:
        arr = np.asarray(value)
    except Exception as exc:  # noqa: BLE001 - report which key could not be read
        raise TypeError(f"state_dict[{key!r}] must be an array or a Tensor, got {type(value).__name__}") from exc
    if arr.dtype.kind not in "biufc":
        raise TypeError(f"state_dict[{key!r}] must be a numeric array or a Tensor, got {type(value).__name__} "
                        f"of dtype {arr.dtype}")
    return arr


class Module:
    """Base class for all layers and models.

    Subclasses call ``super().__init__()`` first, assign Parameters, sub-Modules and buffers as
    attributes, and define ``forward``. Calling the module runs forward pre-hooks, ``forward`` and
    forward hooks (``hook(module, inputs, output)``; a non-None return value replaces the output).
    """

    training: bool

    def __init__(self):
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent_buffers", set())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_forward_hooks", OrderedDict())
        object.__setattr__(self, "_forward_pre_hooks", OrderedDict())

    # ------------------------------------------------------------------ forward
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def __call__(self, *args, **kwargs):
        for hook in list(self._forward_pre_hooks.values()):
            res = hook(self, args)
            if res is not None:
                args = res if isinstance(res, tuple) else (res,)
        out = self.forward(*args, **kwargs)
        for hook in list(self._forward_hooks.values()):
            res = hook(self, args, out)
            if res is not None:
                out = res
        return out

    def register_forward_hook(self, hook) -> RemovableHandle:
        """Call ``hook(module, inputs, output)`` after every forward; returns a handle with ``remove()``."""
        if not callable(hook):
            raise TypeError(f"hook must be callable, got {type(hook).__name__}")
        handle = RemovableHandle(self._forward_hooks)
        self._forward_hooks[handle.id] = hook
        return handle

    def register_forward_pre_hook(self, hook) -> RemovableHandle:
        """Call ``hook(module, inputs)`` before every forward; a non-None result replaces the inputs."""
        if not callable(hook):
            raise TypeError(f"hook must be callable, got {type(hook).__name__}")
        handle = RemovableHandle(self._forward_pre_hooks)
        self._forward_pre_hooks[handle.id] = hook
        return handle

    # ------------------------------------------------------------------ registration
    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError("cannot assign attributes before Module.__init__() is called")
        params, buffers, modules = self._parameters, self._buffers, self._modules
        if isinstance(value, Parameter):
            self._discard(name)
            params[name] = value
        elif isinstance(value, Module):
            self._discard(name)
            modules[name] = value
        elif name in params:
            if value is not None:
                raise TypeError(f"cannot assign {type(value).__name__} as parameter {name!r} "
                                f"(a tinycnn.nn.Parameter or None is expected)")
            params[name] = None
        elif name in modules:
            if value is not None:
                raise TypeError(f"cannot assign {type(value).__name__} as child module {name!r} "
                                f"(a tinycnn.nn.Module or None is expected)")
            modules[name] = None
        elif name in buffers:
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(f"cannot assign {type(value).__name__} as buffer {name!r} "
                                f"(a Tensor or None is expected)")
            buffers[name] = value
        else:
            object.__setattr__(self, name, value)

    def _discard(self, name):
        self.__dict__.pop(name, None)
        self._parameters.pop(name, None)
        self._buffers.pop(name, None)
        self._non_persistent_buffers.discard(name)
        self._modules.pop(name, None)

    def __getattr__(self, name):
        # only called when normal lookup fails: look in the registries
        d = self.__dict__
        for reg in ("_parameters", "_buffers", "_modules"):
            if reg in d and name in d[reg]:
                return d[reg][name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name):
        for reg in (self._parameters, self._buffers, self._modules):
            if name in reg:
                del reg[name]
                self._non_persistent_buffers.discard(name)
                return
        object.__delattr__(self, name)

    def __dir__(self):
        return sorted(set(super().__dir__()) | set(self._parameters) | set(self._buffers) | set(self._modules))

    @staticmethod
    def _check_name(name, what):
        if not isinstance(name, str):
            raise TypeError(f"{what} name must be a str, got {type(name).__name__}")
        if not name or "." in name:
            raise ValueError(f"{what} name must be a non-empty str without '.', got {name!r}")

    def register_buffer(self, name: str, tensor, persistent: bool = True) -> None:
        """Register a non-learnable Tensor (e.g. running_mean) that state_dict saves (when persistent)."""
        self._check_name(name, "buffer")
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"buffer {name!r} must be a Tensor or None, got {type(tensor).__name__}")
        if hasattr(self, name) and name not in self._buffers:
            raise KeyError(f"attribute {name!r} already exists")
        self._discard(name)
        self._buffers[name] = tensor
        if not persistent:
            self._non_persistent_buffers.add(name)

    def register_parameter(self, name: str, param) -> None:
        self._check_name(name, "parameter")
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"parameter {name!r} must be a tinycnn.nn.Parameter or None, got {type(param).__name__}")
        if hasattr(self, name) and name not in self._parameters:
            raise KeyError(f"attribute {name!r} already exists")
        self._discard(name)
        self._parameters[name] = param

    def add_module(self, name: str, module) -> None:
        if not isinstance(name, str):
            raise TypeError(f"module name must be a str, got {type(name).__name__}")
        if "." in name or not name:
            raise ValueError(f"module name must be a non-empty str without '.', got {name!r}")
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"module {name!r} must be a tinycnn.nn.Module or None, got {type(module).__name__}")
        if hasattr(self, name) and name not in self._modules:
            raise KeyError(f"attribute {name!r} already exists")
        self._discard(name)
        self._modules[name] = module

    register_module = add_module

    def get_submodule(self, target: str) -> "Module":
        """The sub-module at dotted path `target` ("" is self), e.g. "features.3"."""
        mod = self
        if target == "":
            return mod
        for part in target.split("."):
            if part not in mod._modules or mod._modules[part] is None:
                raise AttributeError(f"{type(mod).__name__} has no submodule {part!r} (path {target!r})")
            mod = mod._modules[part]
        return mod

    # ------------------------------------------------------------------ traversal
    def named_modules(self, memo=None, prefix: str = "", remove_duplicate: bool = True):
        """(dotted name, module) for self and every descendant, depth first, each once."""
        memo = set() if memo is None else memo
        stack = [(prefix, self)]
        while stack:
            name, mod = stack.pop()
            if remove_duplicate:
                if id(mod) in memo:
                    continue
                memo.add(id(mod))
            yield name, mod
            children = [(name + ("." if name else "") + k, m) for k, m in mod._modules.items() if m is not None]
            stack.extend(reversed(children))

    def modules(self):
        for _, m in self.named_modules():
            yield m

    def named_children(self):
        seen = set()
        for name, m in self._modules.items():
            if m is not None and id(m) not in seen:
                seen.add(id(m))
                yield name, m

    def children(self):
        for _, m in self.named_children():
            yield m

    def _named_members(self, registry, prefix, recurse, remove_duplicate=True):
        seen = set()
        mods = self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate) if recurse else [(prefix, self)]
        for mod_prefix, mod in mods:
            for k, v in getattr(mod, registry).items():
                if v is None or (remove_duplicate and id(v) in seen):
                    continue
                seen.add(id(v))
                yield (mod_prefix + ("." if mod_prefix else "") + k), v

    def named_parameters(self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True):
        """(dotted name, Parameter) pairs in registration order; shared parameters appear once."""
        yield from self._named_members("_parameters", prefix, recurse, remove_duplicate)

    def parameters(self, recurse: bool = True):
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True):
        yield from self._named_members("_buffers", prefix, recurse, remove_duplicate)

    def buffers(self, recurse: bool = True):
        for _, b in self.named_buffers(recurse=recurse):
            yield b

    def apply(self, fn):
        """Call ``fn(m)`` on every child (recursively) and then on self, as torch does; returns self."""
        for m in self.children():
            m.apply(fn)
        fn(self)
        return self

    # ------------------------------------------------------------------ modes and grads
    def train(self, mode: bool = True):
        if not isinstance(mode, bool):
            raise TypeError(f"train(mode) expects a bool, got {type(mode).__name__}")
        # recursive calls (not a flat loop) so that a child overriding train() is honoured, as in torch
        object.__setattr__(self, "training", mode)
        for m in self.children():
            m.train(mode)
        return self

    def eval(self):
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True):
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drop every parameter's gradient (None, PyTorch's default) or replace it by zeros."""
        zero_grads(self.parameters(), set_to_none)

    # ------------------------------------------------------------------ state_dict
    def state_dict(self, destination=None, prefix: str = "", keep_vars: bool = False):
        """OrderedDict of dotted name -> NumPy array (a host copy: later training does not change it).

        Parameters then persistent buffers of each module, parents before children, in
        registration order: PyTorch's keys and order. keep_vars=True returns the Tensors themselves.
        """
        out = OrderedDict() if destination is None else destination
        for mod_prefix, mod in self.named_modules(prefix=prefix.rstrip(".") if prefix else "",
                                                  remove_duplicate=False):
            base = mod_prefix + "." if mod_prefix else ""
            for k, p in mod._parameters.items():
                if p is not None:
                    out[base + k] = p if keep_vars else _host_copy(p.data)
            for k, b in mod._buffers.items():
                if b is not None and k not in mod._non_persistent_buffers:
                    out[base + k] = b if keep_vars else _host_copy(b.data)
        return out

    def _state_tensors(self):
        """name -> Tensor for every entry that state_dict() saves (shared ones under each name)."""
        return self.state_dict(keep_vars=True)

    def load_state_dict(self, state_dict, strict: bool = True):
        """Copy arrays from `state_dict` into the parameters and buffers, in place.

        Values may be NumPy arrays, Tensors or torch tensors; each is cast to the target's dtype and
        device. A shape mismatch always raises; with strict=True missing or unexpected keys raise
        too (`StateDictError`, a ValueError and RuntimeError, listing every problem). Returns
        ``IncompatibleKeys(missing_keys, unexpected_keys)``.
        """
        if not hasattr(state_dict, "keys") or not hasattr(state_dict, "__getitem__"):
            raise TypeError(f"state_dict must be a mapping of names to arrays, got {type(state_dict).__name__}")
        own = self._state_tensors()
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict.keys() if k not in own]
        problems = []
        if strict:
            if unexpected:
                problems.append("unexpected key(s) in state_dict: " + ", ".join(repr(k) for k in unexpected))
            if missing:
                problems.append("missing key(s) in state_dict: " + ", ".join(repr(k) for k in missing))
        arrays = {}
        for k, t in own.items():
            if k not in state_dict:
                continue
            a = _as_host_array(state_dict[k], k)
            if tuple(a.shape) != t.shape:
                problems.append(f"size mismatch for {k!r}: copying a param with shape {tuple(a.shape)} from "
                                f"checkpoint, the shape in current model is {t.shape}")
                continue
            arrays[k] = a
        if problems:
            raise StateDictError(f"Error(s) in loading state_dict for {type(self).__name__}:\n\t"
                                 + "\n\t".join(problems))
        with no_grad():
            for k, a in arrays.items():
                t = own[k]
                t.data[...] = backends.to_device(a, t.device).astype(t.dtype, copy=False)
        return IncompatibleKeys(missing, unexpected)

    # ------------------------------------------------------------------ device / dtype
    def _convert(self, fn):
        """Replace the array of every parameter, buffer and gradient by fn(array), keeping identities."""
        for m in self.modules():
            for reg in (m._parameters, m._buffers):
                for t in reg.values():
                    if t is None:
                        continue
                    t.data = fn(t.data)
                    if t.grad is not None:
                        t.grad.data = fn(t.grad.data)
        return self

    def to(self, device=None, dtype=None):
        """Move parameters and buffers to `device` and/or cast floating-point ones to `dtype`, in place.

        The Parameter objects stay the same (an optimizer built earlier still updates them);
        integer buffers such as num_batches_tracked keep their dtype. Returns self.
        """
        if dtype is None and looks_like_dtype(device):
            # to(dtype) given positionally, as torch allows
            device, dtype = None, device
        dtype = as_dtype(dtype)
        if dtype is not None and dtype.kind != "f":
            raise TypeError(f"Module.to: dtype must be a floating-point dtype, got {dtype}")
        dev = backends.normalize_device(device) if device is not None else None

        def fn(a):
            if dev is not None:
                a = backends.to_device(a, dev)
            if dtype is not None and a.dtype.kind == "f" and a.dtype != dtype:
                a = a.astype(dtype)
            return a
        return self._convert(fn)

    def cpu(self):
        return self.to("cpu")

    def cuda(self):
        return self.to("cuda")

    def double(self):
        return self.to(dtype=np.float64)

    def float(self):
        return self.to(dtype=np.float32)

    # ------------------------------------------------------------------ repr
    def extra_repr(self) -> str:
        """The text inside the parentheses of this module's repr (set by each layer, as in torch)."""
        return ""

    def _get_name(self):
        return type(self).__name__

    def __repr__(self):
        extra = self.extra_repr()
        lines = extra.split("\n") if extra else []
        for name, m in self._modules.items():
            lines.append(f"({name}): " + _addindent(repr(m), 2))
        if not lines:
            return self._get_name() + "()"
        if len(lines) == 1 and not self._modules:
            return f"{self._get_name()}({lines[0]})"
        return self._get_name() + "(\n  " + "\n  ".join(lines) + "\n)"


def _host_copy(a):
    """A NumPy copy of a backend array (device->host copy for CuPy)."""
    if backends.device_of(a) == "cuda":
        return a.get()
    return np.array(a, copy=True)
