"""tinycnn.nn.functional: the op functions (import as F). Each lives with its forward/backward in tinycnn/ops."""
from ..ops.activation import leaky_relu, log_softmax, relu, sigmoid, softmax, tanh  # noqa: F401
