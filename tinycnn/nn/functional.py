"""tinycnn.nn.functional: the op functions (import as F). Each lives with its forward/backward in tinycnn/ops."""
from ..ops.activation import leaky_relu, log_softmax, relu, sigmoid, softmax, tanh  # noqa: F401
from ..ops.conv import conv2d  # noqa: F401
from ..ops.pool import (adaptive_avg_pool2d, avg_pool2d, conv2d_relu_max_pool2d, max_pool2d,  # noqa: F401
                        relu_max_pool2d)
from ..ops.linear import linear  # noqa: F401
from ..ops.dropout import dropout  # noqa: F401
from ..ops.norm import batch_norm  # noqa: F401
from ..ops.loss import binary_cross_entropy_with_logits, cross_entropy, focal_loss, mse_loss  # noqa: F401
