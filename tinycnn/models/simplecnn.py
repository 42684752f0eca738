"""The reference CNN of the project (the network of docs/cpu-performance-notes.md).

conv3x3(C_in->32, pad 1) - ReLU - maxpool2 - conv3x3(32->64, pad 1) - ReLU - maxpool2 -
flatten - linear(64*(H/4)*(W/4) -> 128) - ReLU - linear(128 -> classes).

state_dict names (``conv1.weight``, ``conv2.bias``, ``fc1.weight``, ``fc2.bias``) equal those of the
same network written as a torch.nn.Module with the same attribute names.
"""
from __future__ import annotations

from .. import nn
from ..nn import functional as F

__all__ = ["SimpleCNN"]


class SimpleCNN(nn.Module):
    """Two conv layers and two linear layers; ~421k parameters at 1x28x28 and 2 classes."""

    head = "fc2"        # the classifier layer replaced when transfer learning changes the classes
    cam_layer = "conv2"  # last conv layer: the default Grad-CAM target

    def __init__(self, in_channels: int = 1, num_classes: int = 2, input_size: int = 28):
        super().__init__()
        if input_size % 4:
            raise ValueError(f"input_size must be a multiple of 4 (two 2x2 poolings), got {input_size}")
        self.conv1 = nn.Conv2d(in_channels, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc1 = nn.Linear(64 * (input_size // 4) ** 2, 128)
        self.fc2 = nn.Linear(128, num_classes)

    def forward(self, x):
        x = _conv_relu_pool(self.conv1, x)
        x = _conv_relu_pool(self.conv2, x)
        x = x.flatten(1)
        return self.fc2(F.relu(self.fc1(x)))


def _conv_relu_pool(conv, x):
    """max_pool2d(relu(conv(x)), 2), bit-identical to the three layers in turn.

    Training: ReLU and pooling as one op that pools first (`F.relu_max_pool2d`: ReLU commutes with a
    window max, so it reads the full-size map once). Inference (no gradient needed) through a conv
    without hooks: one fused op (`F.conv2d_relu_max_pool2d`) that pools while the convolution writes its
    output. Hooks (Grad-CAM, summaries) see `conv` run as a module.
    """
    if conv._forward_hooks or conv._forward_pre_hooks:
        return F.relu_max_pool2d(conv(x), 2)
    return F.conv2d_relu_max_pool2d(x, conv.weight, conv.bias, conv.stride, conv._padding_pair(), conv.dilation,
                                    conv.groups)
