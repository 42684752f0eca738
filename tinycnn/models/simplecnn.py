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
        # = max_pool2d(relu(conv(x)), 2) as one op (nn.Conv2d.relu_max_pool2d): for inference the pooling
        # happens while the convolution writes its output; bit-identical to the three layers in turn
        x = self.conv1.relu_max_pool2d(x)
        x = self.conv2.relu_max_pool2d(x)
        x = x.flatten(1)
        return self.fc2(F.relu(self.fc1(x)))
