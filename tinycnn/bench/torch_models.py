"""PyTorch twins of the tinycnn models, for the end-to-end peer timings.

Each twin has the state_dict names of its tinycnn model (the API contract promises the same names
for the same architecture), so `load_tinycnn_weights` copies weights across with strict=True; the
benchmark then checks outputs and gradients agree before timing anything, which also proves the
twin really is the same network.
"""
from __future__ import annotations

import numpy as np

__all__ = ["build_torch_model", "load_tinycnn_weights"]


def build_torch_model(name: str, in_channels: int = 1, num_classes: int = 2, input_size: int = 28):
    import torch  # noqa: PLC0415
    from torch import nn  # noqa: PLC0415
    F = torch.nn.functional

    class SimpleCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(in_channels, 32, 3, padding=1)
            self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
            self.pool = nn.MaxPool2d(2)
            self.fc1 = nn.Linear(64 * (input_size // 4) ** 2, 128)
            self.fc2 = nn.Linear(128, num_classes)

        def forward(self, x):
            x = self.pool(F.relu(self.conv1(x)))
            x = self.pool(F.relu(self.conv2(x)))
            return self.fc2(F.relu(self.fc1(x.flatten(1))))

    class BasicBlock(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.relu = nn.ReLU()
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.downsample = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                               if stride != 1 or cin != cout else None)

        def forward(self, x):
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return self.relu(out + (x if self.downsample is None else self.downsample(x)))

    class ResNet18(nn.Module):
        """MedMNIST 28x28 form: 3x3 stride-1 stem, no max pool; torchvision's names."""

        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.relu = nn.ReLU()
            cin = 64
            for i, width in enumerate((64, 128, 256, 512), start=1):
                s = 1 if i == 1 else 2
                setattr(self, f"layer{i}", nn.Sequential(BasicBlock(cin, width, s), BasicBlock(width, width, 1)))
                cin = width
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(512, num_classes)

        def forward(self, x):
            x = self.relu(self.bn1(self.conv1(x)))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(self.avgpool(x).flatten(1))

    models = {"simplecnn": SimpleCNN, "resnet18": ResNet18}
    if name not in models:
        raise ValueError(f"no PyTorch twin for model {name!r}: expected one of {sorted(models)}")
    return models[name]()


def load_tinycnn_weights(torch_model, state_dict: dict) -> None:
    """Copy a tinycnn state_dict (name -> NumPy array) into the twin, strictly (names and shapes)."""
    import torch  # noqa: PLC0415
    torch_model.load_state_dict({k: torch.from_numpy(np.array(v, copy=True)) for k, v in state_dict.items()},
                                strict=True)
