"""tinycnn: a from-scratch convolutional neural network engine (NumPy / Numba / CuPy)."""
__version__ = "0.1.0"

from . import _threads

_threads.before_numpy()  # first: OpenBLAS reads its settings when NumPy loads

from . import backends, cuda  # noqa: F401
from .autograd import enable_grad, is_grad_enabled, no_grad, set_grad_enabled  # noqa: F401
from .gradcheck import GradcheckError, gradcheck  # noqa: F401
from .random import manual_seed  # noqa: F401
from .serialization import load, save  # noqa: F401
from .tensor import (Tensor, arange, cat, from_numpy, ones, ones_like, rand, randn, stack,  # noqa: F401
                     tensor, where, zeros, zeros_like)

from . import nn, optim  # noqa: E402,F401  (nn and optim use the names above)


_LAZY = ("data", "metrics", "models", "explain", "viz", "report", "train", "training", "summary")


def __getattr__(name):
    # heavier parts (matplotlib, data files) load on first use, so `import tinycnn` stays fast
    if name in _LAZY:
        import importlib
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'tinycnn' has no attribute {name!r}")
