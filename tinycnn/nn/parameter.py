"""Parameter: a Tensor that a Module registers as learnable (requires_grad=True by default)."""
from __future__ import annotations

import numpy as np

from .. import backends
from ..tensor import Tensor

__all__ = ["Parameter"]


class Parameter(Tensor):
    """A leaf Tensor that `Module.__setattr__` records in `_parameters`.

    ``Parameter(data=None, requires_grad=True)``: `data` is a Tensor (its array is shared, not
    copied, as torch.nn.Parameter does), a backend array (shared), or anything `tinycnn.tensor`
    accepts. With no data it is an empty float32 tensor.
    """

    def __init__(self, data=None, requires_grad=True):
        if data is None:
            data = np.empty((0,), dtype=np.float32)
        if isinstance(data, Tensor):
            data = data.data
        if not (isinstance(data, np.ndarray) or backends.device_of(data) == "cuda"):
            data = Tensor(data).data     # numbers and lists: a new array by tensor()'s dtype rules
        # wrap the array itself: Tensor() copies (as torch.tensor), a Parameter shares its data
        self.data, self.grad, self._ctx, self.requires_grad = data, None, None, False
        if requires_grad:
            self.requires_grad_(True)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()
