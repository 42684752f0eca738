"""A small VGG-style network with batch norm (the default model of the training recipes).

features: [conv3x3-BN-ReLU] x2 (32) - maxpool2 - [conv3x3-BN-ReLU] x2 (64) - maxpool2 -
          conv3x3-BN-ReLU (128) - maxpool2
then global average pooling, dropout 0.3 and one linear layer. About 139k parameters; the global
pooling makes it work for any input size >= 8.

state_dict names follow ``torch.nn.Sequential`` numbering: ``features.0.weight`` (conv),
``features.1.running_mean`` (BN), ..., ``classifier.1.weight`` (the linear layer after dropout).
"""
from __future__ import annotations

from .. import nn

__all__ = ["SmallVGG"]

_PLAN = (32, 32, "M", 64, 64, "M", 128, "M")


class SmallVGG(nn.Module):
    head = "classifier.1"
    cam_layer = "features.16"   # ReLU after the last conv-BN: the last map before pooling (7x7 at 28x28)

    def __init__(self, in_channels: int = 1, num_classes: int = 2, dropout: float = 0.3):
        super().__init__()
        layers = []
        c = in_channels
        for v in _PLAN:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                # bias is redundant before batch norm (BN's shift absorbs it)
                layers += [nn.Conv2d(c, v, 3, padding=1, bias=False), nn.BatchNorm2d(v), nn.ReLU()]
                c = v
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(c, num_classes))

    def forward(self, x):
        return self.classifier(self.flatten(self.pool(self.features(x))))
