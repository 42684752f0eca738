"""Grad-CAM equals its formula, ReLU(sum_k alpha_k A_k) with alpha_k = mean_ij dScore/dA_k, computed with torch."""
import numpy as np
import pytest
import torch

import tinycnn
from tinycnn import nn
from tinycnn.explain import grad_cam, overlay, resize_bilinear, save_overlays


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(6 * 4 * 4, 3)

    def forward(self, x):
        return self.fc(self.pool(self.conv2(self.relu(self.conv1(x)))).flatten(1))


def _torch_cam(model, x, target):
    sd = {k: torch.from_numpy(np.array(v, dtype=np.float64)) for k, v in model.state_dict().items()}
    xt = torch.from_numpy(x.astype(np.float64))
    a1 = torch.relu(torch.nn.functional.conv2d(xt, sd["conv1.weight"], sd["conv1.bias"], padding=1))
    A = torch.nn.functional.conv2d(a1, sd["conv2.weight"], sd["conv2.bias"], padding=1).detach().requires_grad_()
    logits = torch.nn.functional.linear(torch.nn.functional.max_pool2d(A, 2).flatten(1), sd["fc.weight"], sd["fc.bias"])
    logits[torch.arange(len(x)), torch.as_tensor(np.array(target))].sum().backward()
    alpha = A.grad.mean(dim=(2, 3))                                     # (N, K)
    return torch.relu((alpha[:, :, None, None] * A).sum(1)).detach().numpy(), logits.detach().numpy()


@pytest.mark.parametrize("target", [None, 0, [2, 1]])
def test_grad_cam_equals_formula(target):
    tinycnn.manual_seed(3)
    model = Tiny()
    x = np.random.default_rng(1).normal(size=(2, 1, 8, 8)).astype(np.float32)
    cam, t = grad_cam(model, x, layer="conv2", target=target, upsample=False, normalize=False)
    if target is None:
        with tinycnn.no_grad():
            expected_t = model(tinycnn.tensor(x)).numpy().argmax(1)
    else:
        expected_t = np.broadcast_to(np.asarray(target), (2,))
    np.testing.assert_array_equal(t, expected_t)
    ref, _ = _torch_cam(model, x, expected_t)
    assert cam.shape == (2, 8, 8)
    np.testing.assert_allclose(cam, ref, rtol=1e-4, atol=1e-6)
    assert ref.max() > 0  # the check is not vacuous


def test_grad_cam_default_output_is_normalised_at_input_size_and_leaves_model_alone():
    tinycnn.manual_seed(0)
    from tinycnn.models import get_model
    model = get_model("vgg")
    model.train()
    x = np.random.default_rng(0).normal(size=(3, 1, 28, 28)).astype(np.float32)
    cams, t = grad_cam(model, x)            # default layer: model.cam_layer
    assert cams.shape == (3, 28, 28) and cams.dtype == np.float32
    assert cams.min() >= 0 and cams.max() <= 1 + 1e-6
    assert model.training
    assert all(p.grad is None for p in model.parameters())
    assert all(p.requires_grad for p in model.parameters())


def test_grad_cam_errors():
    model = Tiny()
    x = np.zeros((1, 1, 8, 8), np.float32)
    with pytest.raises(ValueError, match="model has no layer 'conv9'"):
        grad_cam(model, x, layer="conv9")
    with pytest.raises(ValueError, match="must output \\(N, K, h, w\\) feature maps"):
        grad_cam(model, x, layer="fc")
    with pytest.raises(ValueError, match=r"target must be class indices in \[0, 2\]"):
        grad_cam(model, x, layer="conv2", target=5)
    with pytest.raises(ValueError, match="images must have shape"):
        grad_cam(model, np.zeros((8, 8), np.float32), layer="conv2")


def test_resize_bilinear_matches_torch_interpolate():
    m = np.random.default_rng(0).random((2, 7, 7))
    ours = resize_bilinear(m, (28, 28))
    ref = torch.nn.functional.interpolate(torch.from_numpy(m)[:, None], size=(28, 28), mode="bilinear",
                                          align_corners=False)[:, 0].numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-12)


def test_overlay_png(tmp_path):
    from PIL import Image
    img = np.random.default_rng(0).random((2, 1, 28, 28))
    cams = np.random.default_rng(1).random((2, 28, 28))
    assert overlay(img[0], cams[0]).shape == (28, 28, 3)
    path = save_overlays(img, cams, tmp_path / "cam.png", titles=["a", "b"], scale=4)
    im = Image.open(path)
    assert im.size == ((28 * 2 + 1) * 4, (28 * 2 + 1) * 4) and im.mode == "RGB"
