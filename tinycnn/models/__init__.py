"""tinycnn.models: the model zoo, built by name with `get_model(name, in_channels, num_classes)`.

| name        | what                                                              | params (1x28x28, 2 classes) |
|-------------|-------------------------------------------------------------------|-----------------------------|
| `simplecnn` | the reference CNN (2 conv + 2 linear)                             | ~421k                       |
| `vgg`       | small VGG-style net with batch norm, GAP, dropout (default model) | ~139k                       |
| `resnet18`  | ResNet-18, MedMNIST 28x28 form (3x3 stem, no max pool)            | ~11.2M                      |

`get_model(name, ..., ensemble=K)` with K > 1 builds an `Ensemble` of K independently initialised
copies (averaged softmax, or averaged per-label sigmoid with `multilabel=True`; state_dict names
``members.<k>.<name>``).

Each model class names its classifier layer in ``head`` (replaced by transfer learning when the number
of classes changes) and its default Grad-CAM layer in ``cam_layer``.
"""
from __future__ import annotations

from .ensemble import Ensemble, member_seed
from .resnet import BasicBlock, ResNet18
from .simplecnn import SimpleCNN
from .vgg import SmallVGG

__all__ = ["MODELS", "get_model", "list_models", "SimpleCNN", "SmallVGG", "ResNet18", "BasicBlock",
           "Ensemble", "member_seed", "get_submodule", "replace_submodule"]

MODELS = {
    "simplecnn": SimpleCNN,
    "vgg": SmallVGG,
    "resnet18": ResNet18,
}
_ALIASES = {"vgg_bn": "vgg", "smallvgg": "vgg", "resnet": "resnet18", "simple": "simplecnn"}


def list_models() -> list[str]:
    return sorted(MODELS)


def canonical_name(name: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"model name must be a str, got {type(name).__name__}")
    key = name.strip().lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in MODELS:
        raise ValueError(f"unknown model {name!r}: expected one of {', '.join(list_models())}")
    return key


def get_model(name: str, in_channels: int = 1, num_classes: int = 2, ensemble: int = 1, multilabel: bool = False,
              **kwargs):
    """Build model `name` for `in_channels`-channel images and `num_classes` classes (labels); with
    `ensemble` = K > 1, an `Ensemble` of K copies, initialised one after the other from the global seed,
    averaging softmax, or per-label sigmoid with `multilabel=True` (a single model ignores `multilabel`:
    its outputs are logits either way)."""
    key = canonical_name(name)
    for arg, val in (("in_channels", in_channels), ("num_classes", num_classes), ("ensemble", ensemble)):
        if isinstance(val, bool) or not isinstance(val, int) or val < 1:
            raise ValueError(f"{arg} must be a positive int, got {val!r}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2 (binary tasks use 2 softmax outputs), got {num_classes}")
    if ensemble > 1:
        return Ensemble([MODELS[key](in_channels=in_channels, num_classes=num_classes, **kwargs)
                         for _ in range(ensemble)], multilabel=multilabel)
    return MODELS[key](in_channels=in_channels, num_classes=num_classes, **kwargs)


def get_submodule(model, path: str):
    """The submodule at dotted `path` (``"features.14"``, ``"layer4.1.conv2"``); ValueError naming valid paths."""
    names = dict(model.named_modules()) if hasattr(model, "named_modules") else None
    if names is not None:
        if path in names and path != "":
            return names[path]
        raise ValueError(f"model has no layer {path!r}; layers are: {', '.join(n for n in names if n)}")
    mod = model
    for part in path.split("."):
        children = dict(mod.named_children())
        if part not in children:
            raise ValueError(f"model has no layer {path!r} (no child {part!r}; children: {', '.join(children)})")
        mod = children[part]
    return mod


def replace_submodule(model, path: str, new) -> None:
    """Put module `new` at dotted `path` (used to give a pretrained model a new head)."""
    parent_path, _, last = path.rpartition(".")
    parent = get_submodule(model, parent_path) if parent_path else model
    setattr(parent, last, new)
