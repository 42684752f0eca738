"""Containers: Sequential, ModuleList and ModuleDict, named as PyTorch names them (`0.weight`, ...)."""
from __future__ import annotations

import operator
from collections import OrderedDict

from ..tensor import TensorIndexError
from ..ops.pool import relu_max_pool2d
from .module import Module

__all__ = ["Sequential", "ModuleList", "ModuleDict"]


def _index(idx, n, what):
    if isinstance(idx, bool) or not isinstance(idx, int):
        try:
            idx = operator.index(idx)
        except TypeError:
            raise TypeError(f"{what} indices must be integers or slices, got {type(idx).__name__}") from None
    if not -n <= idx < n:
        raise TensorIndexError(f"index {idx} is out of range for {what} of length {n}")   # a ValueError too
    return idx % n


def _relu_then_max_pool(a, b, x) -> bool:
    """True when modules a, b are a plain ReLU and MaxPool2d with no hooks, applied to a 4-D float tensor."""
    from ..tensor import Tensor            # noqa: PLC0415 - nn imports tensor; keep the import cheap
    from .layers import MaxPool2d, ReLU    # noqa: PLC0415 - layers imports this module
    return (type(a) is ReLU and type(b) is MaxPool2d and isinstance(x, Tensor) and x.ndim == 4
            and x.dtype.kind == "f" and not (a._forward_hooks or a._forward_pre_hooks
                                             or b._forward_hooks or b._forward_pre_hooks))


def _conv_relu_pool(a, b, c, x) -> bool:
    """True when modules a, b, c are a Conv2d, a plain ReLU and a 2x2, stride-2 MaxPool2d without padding,
    the last two without hooks, applied to a 4-D float tensor. (Hooks on the Conv2d are its own
    `relu_max_pool2d`'s business: it then runs as a module, followed by the same ReLU-pool op.)"""
    from .layers import Conv2d    # noqa: PLC0415 - layers imports this module
    return (type(a) is Conv2d and _relu_then_max_pool(b, c, x)
            and c.kernel_size in (2, (2, 2)) and c.stride in (2, (2, 2)) and c.padding in (0, (0, 0)))


class Sequential(Module):
    """Calls its modules in order: ``Sequential(m0, m1, ...)`` or ``Sequential(OrderedDict(name=m))``.

    Children are named "0", "1", ... (or by the OrderedDict keys), so a state_dict has
    PyTorch's keys, e.g. ``0.weight``, ``1.running_mean``.

    Two shortcuts, neither taken for modules with hooks: a ``ReLU`` directly followed by a ``MaxPool2d``
    runs as one op that pools first and applies ReLU to the smaller pooled map. ReLU commutes with a
    window max, so outputs and gradients are bit-identical to calling the two modules (``ops/pool.py``,
    ``ReLUMaxPool2d``); it saves two passes over the full-size map. A ``Conv2d`` before them, with a 2x2
    stride-2 pool, runs as ``Conv2d.relu_max_pool2d``: for inference, the convolution pools as it writes
    its output (``ops.pool.conv2d_relu_max_pool2d``), with the same values.
    """

    def __init__(self, *args):
        super().__init__()
        if len(args) == 1 and isinstance(args[0], OrderedDict):
            for name, m in args[0].items():
                self.add_module(name, m)
        else:
            for i, m in enumerate(args):
                if not isinstance(m, Module):
                    raise TypeError(f"Sequential: argument {i} must be a tinycnn.nn.Module, got {type(m).__name__}")
                self.add_module(str(i), m)

    def forward(self, x):
        modules = list(self._modules.values())
        i = 0
        while i < len(modules):
            if i + 2 < len(modules) and _conv_relu_pool(modules[i], modules[i + 1], modules[i + 2], x):
                x = modules[i].relu_max_pool2d(x)     # one op, bit-identical (nn.Conv2d.relu_max_pool2d)
                i += 3
                continue
            if i + 1 < len(modules) and _relu_then_max_pool(modules[i], modules[i + 1], x):
                # one op, bit-identical results (ops/pool.py, ReLUMaxPool2d)
                pool = modules[i + 1]
                x = relu_max_pool2d(x, pool.kernel_size, pool.stride, pool.padding)
                i += 2
                continue
            x = modules[i](x)
            i += 1
        return x

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return type(self)(OrderedDict(list(self._modules.items())[idx]))
        keys = list(self._modules)
        return self._modules[keys[_index(idx, len(keys), "Sequential")]]

    def __setitem__(self, idx, module):
        keys = list(self._modules)
        self.add_module(keys[_index(idx, len(keys), "Sequential")], module)

    def __delitem__(self, idx):
        keys = list(self._modules)
        if isinstance(idx, slice):
            for k in keys[idx]:
                del self._modules[k]
        else:
            del self._modules[keys[_index(idx, len(keys), "Sequential")]]
        # renumber, as torch does, so names stay 0..n-1
        items = list(self._modules.items())
        self._modules.clear()
        for i, (_, m) in enumerate(items):
            self._modules[str(i)] = m

    def append(self, module):
        self.add_module(str(len(self)), module)
        return self

    def extend(self, modules):
        for m in modules:
            self.append(m)
        return self


class ModuleList(Module):
    """A list of modules whose parameters are registered (names "0", "1", ...). Not callable itself."""

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.extend(modules)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return type(self)(list(self._modules.values())[idx])
        return self._modules[str(_index(idx, len(self), "ModuleList"))]

    def __setitem__(self, idx, module):
        self.add_module(str(_index(idx, len(self), "ModuleList")), module)

    def __delitem__(self, idx):
        mods = list(self._modules.values())
        if isinstance(idx, slice):
            del mods[idx]
        else:
            del mods[_index(idx, len(mods), "ModuleList")]
        self._modules.clear()
        for i, m in enumerate(mods):
            self._modules[str(i)] = m

    def __iadd__(self, modules):
        return self.extend(modules)

    def append(self, module):
        self.add_module(str(len(self)), module)
        return self

    def extend(self, modules):
        for m in modules:
            self.append(m)
        return self

    def insert(self, index, module):
        mods = list(self._modules.values())
        mods.insert(index, module)
        self._modules.clear()
        for i, m in enumerate(mods):
            self.add_module(str(i), m)

    def forward(self, *args, **kwargs):
        raise NotImplementedError("ModuleList is not callable; iterate over it and call its modules")


class ModuleDict(Module):
    """An ordered dict of named modules whose parameters are registered under those names."""

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.update(modules)

    def __getitem__(self, key):
        return self._modules[key]

    def __setitem__(self, key, module):
        self.add_module(key, module)

    def __delitem__(self, key):
        del self._modules[key]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules)

    def __contains__(self, key):
        return key in self._modules

    def keys(self):
        return self._modules.keys()

    def values(self):
        return self._modules.values()

    def items(self):
        return self._modules.items()

    def update(self, modules):
        items = modules.items() if hasattr(modules, "items") else modules
        for k, m in items:
            self.add_module(k, m)

    def forward(self, *args, **kwargs):
        raise NotImplementedError("ModuleDict is not callable; index it and call its modules")
