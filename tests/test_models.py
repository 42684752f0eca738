"""Models: registry, shapes, and PyTorch-identical state_dict names (checked against torch twins built here)."""
import numpy as np
import pytest
import torch
import torch.nn as tnn

import sys
from pathlib import Path

import tinycnn
from tinycnn.models import get_model, get_submodule, list_models, replace_submodule

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import torch_replica  # noqa: E402


# ------------------------------------------------------------------------------------- torch twins
class TorchSimpleCNN(tnn.Module):
    def __init__(self, c, k):
        super().__init__()
        self.conv1 = tnn.Conv2d(c, 32, 3, padding=1)
        self.conv2 = tnn.Conv2d(32, 64, 3, padding=1)
        self.pool = tnn.MaxPool2d(2)
        self.fc1 = tnn.Linear(64 * 7 * 7, 128)
        self.fc2 = tnn.Linear(128, k)

    def forward(self, x):
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


# the PyTorch twin of SmallVGG lives with the script that trains both on the same batches
TorchVGG = torch_replica.torch_vgg


class TorchBlock(tnn.Module):
    def __init__(self, i, o, s):
        super().__init__()
        self.conv1 = tnn.Conv2d(i, o, 3, s, 1, bias=False)
        self.bn1 = tnn.BatchNorm2d(o)
        self.relu = tnn.ReLU()
        self.conv2 = tnn.Conv2d(o, o, 3, 1, 1, bias=False)
        self.bn2 = tnn.BatchNorm2d(o)
        self.downsample = (tnn.Sequential(tnn.Conv2d(i, o, 1, s, bias=False), tnn.BatchNorm2d(o))
                           if s != 1 or i != o else None)

    def forward(self, x):
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class TorchResNet18(tnn.Module):
    """torchvision's resnet18 with the MedMNIST 28x28 stem (3x3 conv, no max pool)."""

    def __init__(self, c, k):
        super().__init__()
        self.conv1 = tnn.Conv2d(c, 64, 3, 1, 1, bias=False)
        self.bn1 = tnn.BatchNorm2d(64)
        self.relu = tnn.ReLU()
        p = 64
        for i, w in enumerate((64, 128, 256, 512), 1):
            setattr(self, f"layer{i}", tnn.Sequential(TorchBlock(p, w, 1 if i == 1 else 2), TorchBlock(w, w, 1)))
            p = w
        self.avgpool = tnn.AdaptiveAvgPool2d(1)
        self.fc = tnn.Linear(512, k)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


TWINS = {"simplecnn": TorchSimpleCNN, "vgg": TorchVGG, "resnet18": TorchResNet18}


@pytest.mark.parametrize("name,c,k", [("simplecnn", 1, 2), ("vgg", 1, 2), ("vgg", 3, 7), ("resnet18", 3, 9)])
def test_state_dict_names_and_shapes_equal_torch(name, c, k):
    ours = get_model(name, in_channels=c, num_classes=k).state_dict()
    theirs = TWINS[name](c, k).state_dict()
    assert list(ours) == list(theirs)
    for key in theirs:
        assert tuple(ours[key].shape) == tuple(theirs[key].shape), key


@pytest.mark.parametrize("name", ["simplecnn", "vgg", "resnet18"])
def test_forward_matches_torch_with_same_weights(name, rng):
    model = get_model(name, in_channels=1, num_classes=3)
    twin = TWINS[name](1, 3)
    sd = {k: torch.from_numpy(np.array(v)) for k, v in model.state_dict().items()}
    # non-trivial BN statistics so eval mode really uses them
    for k in sd:
        if k.endswith("running_mean"):
            sd[k] = torch.from_numpy(rng.normal(0, 0.1, sd[k].shape).astype(np.float32))
        elif k.endswith("running_var"):
            sd[k] = torch.from_numpy(rng.uniform(0.5, 1.5, sd[k].shape).astype(np.float32))
    twin.load_state_dict(sd)
    model.load_state_dict({k: v.numpy() for k, v in sd.items()})
    model.eval()
    twin.eval()
    x = rng.normal(size=(2, 1, 28, 28)).astype(np.float32)
    with tinycnn.no_grad():
        ours = model(tinycnn.tensor(x)).numpy()
    theirs = twin(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)


def test_vgg_has_about_139k_parameters():
    n = sum(int(np.prod(p.shape)) for p in get_model("vgg").parameters())
    assert 135_000 < n < 142_000


def test_unknown_model_is_a_value_error_naming_the_choices():
    with pytest.raises(ValueError, match=r"unknown model 'alexnet': expected one of resnet18, simplecnn, vgg"):
        get_model("alexnet")
    with pytest.raises(ValueError, match="num_classes must be >= 2"):
        get_model("vgg", num_classes=1)
    with pytest.raises(ValueError, match="in_channels must be a positive int"):
        get_model("vgg", in_channels=0)
    assert list_models() == ["resnet18", "simplecnn", "vgg"]


def test_submodule_paths_and_head_replacement():
    m = get_model("vgg", num_classes=2)
    assert type(get_submodule(m, m.cam_layer)).__name__ == "ReLU"
    with pytest.raises(ValueError, match="model has no layer 'features.99'"):
        get_submodule(m, "features.99")
    replace_submodule(m, m.head, tinycnn.nn.Linear(128, 5))
    assert m.state_dict()["classifier.1.weight"].shape == (5, 128)
    assert m(tinycnn.zeros(2, 1, 28, 28)).shape == (2, 5)
