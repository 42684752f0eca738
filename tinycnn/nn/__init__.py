"""tinycnn.nn: modules, functional ops (tinycnn.nn.functional) and initialisers (tinycnn.nn.init)."""
from . import functional  # noqa: F401
from . import init  # noqa: F401
from .containers import ModuleDict, ModuleList, Sequential  # noqa: F401
from .layers import (AdaptiveAvgPool2d, AvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d, Dropout, Flatten,  # noqa: F401
                     Identity, LeakyReLU, Linear, LogSoftmax, MaxPool2d, ReLU, Sigmoid, Softmax, Tanh)
from .losses import BCEWithLogitsLoss, CrossEntropyLoss, FocalLoss, MSELoss  # noqa: F401
from .module import IncompatibleKeys, Module, RemovableHandle, StateDictError  # noqa: F401
from .parameter import Parameter  # noqa: F401
