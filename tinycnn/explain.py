"""Grad-CAM: which image regions drove a CNN's score for a class (Selvaraju et al., 2017).

For a conv layer with activations A (N, K, h, w) and the score y_c of class c (the logit, before softmax):

    alpha_k = (1 / (h w)) * sum_ij  d y_c / d A_k[i, j]          (global-average-pooled gradients)
    CAM     = ReLU( sum_k alpha_k A_k )                           (N, h, w)

The map is then bilinearly resized to the input size and scaled to [0, 1] per image (unless asked not to).
A forward hook on the layer keeps A and calls `retain_grad()` on it, so any layer whose output is a 4-D
Tensor works (conv, BN, ReLU, a residual stage...) and the model needs no changes.
"""
from __future__ import annotations

import io

import numpy as np

__all__ = ["grad_cam", "overlay", "save_overlays", "resize_bilinear"]


def _resolve_layer(model, layer):
    if layer is None:
        name = getattr(model, "cam_layer", None)
        if name is None:
            raise ValueError("layer must be given: this model has no default Grad-CAM layer (cam_layer)")
        layer = name
    if isinstance(layer, str):
        from .models import get_submodule
        return get_submodule(model, layer)
    if not hasattr(layer, "register_forward_hook"):
        raise TypeError(f"layer must be a Module or a dotted layer name, got {type(layer).__name__}")
    return layer


def resize_bilinear(maps: np.ndarray, size) -> np.ndarray:
    """Resize (N, h, w) maps to (N, H, W), pixel centres aligned (align_corners=False)."""
    maps = np.asarray(maps, dtype=np.float64)
    n, h, w = maps.shape
    H, W = size
    if (h, w) == (H, W):
        return maps.copy()

    def coords(out, inp):
        x = (np.arange(out) + 0.5) * inp / out - 0.5
        x = np.clip(x, 0, inp - 1)
        lo = np.floor(x).astype(np.int64)
        hi = np.minimum(lo + 1, inp - 1)
        return lo, hi, x - lo

    y0, y1, fy = coords(H, h)
    x0, x1, fx = coords(W, w)
    top = maps[:, y0][:, :, x0] * (1 - fx) + maps[:, y0][:, :, x1] * fx
    bot = maps[:, y1][:, :, x0] * (1 - fx) + maps[:, y1][:, :, x1] * fx
    return top * (1 - fy)[:, None] + bot * fy[:, None]


def _ensemble_cam(model, images, layer, target, upsample, normalize):
    """Mean of the members' raw CAMs at the same (member-relative) layer, for the ensemble's classes."""
    import tinycnn

    if target is None:
        x = images if isinstance(images, tinycnn.Tensor) else tinycnn.tensor(np.asarray(images, dtype=np.float32))
        was = model.training
        model.eval()
        try:
            with tinycnn.no_grad():
                target = model(x).numpy().argmax(axis=1)
        finally:
            model.train(was)
    raw = [grad_cam(m, images, layer, target, upsample=False, normalize=False) for m in model.members]
    cam = np.mean([c for c, _ in raw], axis=0).astype(np.float64)
    return _finish(cam, images.shape[2:], upsample, normalize), raw[0][1]


def _finish(cam, size, upsample, normalize):
    if upsample:
        cam = resize_bilinear(cam, size)
    if normalize:
        peak = cam.reshape(len(cam), -1).max(axis=1)
        cam = cam / np.where(peak > 0, peak, 1.0)[:, None, None]
    return cam.astype(np.float32)


def grad_cam(model, images, layer=None, target=None, upsample: bool = True, normalize: bool = True):
    """Grad-CAM maps of `images` (N, C, H, W) for class `target` at conv layer `layer`.

    layer: a Module inside `model` or its dotted name ("features.16"); None uses `model.cam_layer`.
    target: None (each image's predicted class), an int (the same class for all) or a sequence of N ints.
    Returns (cams, targets): cams float32 (N, H, W) in [0, 1] with the defaults, or the raw (N, h, w)
    ReLU(sum_k alpha_k A_k) with upsample=False, normalize=False; targets int64 (N,).
    The model is put in eval mode for the pass and restored afterwards; parameter grads are left untouched.

    For a `tinycnn.models.Ensemble` and a layer named inside a member ("features.16", or None for the
    members' default), the map is the mean of the members' raw maps, each for the ensemble's class:
    CAM = (1/K) sum_k ReLU(sum_j alpha_kj A_kj). Naming "members.<k>.<layer>" instead gives the map of
    member k's layer for the ensemble's output (score = log of the averaged probability of the class).
    """
    import tinycnn

    if hasattr(model, "members") and (layer is None or (isinstance(layer, str) and not layer.startswith("members."))):
        return _ensemble_cam(model, images, layer, target, upsample, normalize)

    mod = _resolve_layer(model, layer)
    x = images if isinstance(images, tinycnn.Tensor) else tinycnn.tensor(np.asarray(images, dtype=np.float32))
    if x.ndim != 4:
        raise ValueError(f"images must have shape (N, C, H, W), got shape {tuple(x.shape)}")
    params = list(model.parameters())
    saved_grads = [p.grad for p in params]
    saved_flags = [p.requires_grad for p in params]
    store = {}

    def hook(module, inputs, output):
        if output.ndim != 4:
            raise ValueError(f"Grad-CAM layer must output (N, K, h, w) feature maps, got shape {tuple(output.shape)}")
        output.retain_grad()
        store["A"] = output

    handle = mod.register_forward_hook(hook)
    was_training = model.training
    model.eval()
    try:
        for p in params:  # only the activations need gradients, not the weights
            p.requires_grad = False
        x = x.detach()
        x.requires_grad = True  # makes the graph reach the hooked layer even if all weights are frozen
        with tinycnn.enable_grad():
            logits = model(x)
            if "A" not in store:
                raise ValueError("the Grad-CAM layer was not used in the model's forward pass")
            n, c = logits.shape
            if target is None:
                t = np.asarray(logits.numpy().argmax(axis=1), dtype=np.int64)
            else:
                t = np.broadcast_to(np.asarray(target, dtype=np.int64), (n,)).copy()
                if t.min() < 0 or t.max() >= c:
                    raise ValueError(f"target must be class indices in [0, {c - 1}], got {t.tolist()}")
            onehot = np.zeros((n, c), dtype=logits.numpy().dtype)
            onehot[np.arange(n), t] = 1.0
            score = (logits * tinycnn.tensor(onehot, device=logits.device)).sum()
            score.backward()
        A = store["A"].numpy().astype(np.float64)
        dA = store["A"].grad.numpy().astype(np.float64)
    finally:
        handle.remove()
        model.train(was_training)
        for p, g, f in zip(params, saved_grads, saved_flags):
            p.requires_grad = f
            p.grad = g
    alpha = dA.mean(axis=(2, 3))                              # (N, K)
    cam = np.maximum(np.einsum("nk,nkhw->nhw", alpha, A), 0)  # (N, h, w)
    return _finish(cam, x.shape[2:], upsample, normalize), t


def overlay(image: np.ndarray, cam: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """RGB uint8 (H, W, 3): the image (C, H, W in [0, 1]) in grey/colour with the CAM as a jet heat map."""
    from matplotlib import colormaps

    img = np.asarray(image, dtype=np.float64)
    if img.ndim == 3 and img.shape[0] in (1, 3):
        img = img.transpose(1, 2, 0)
    if img.ndim == 2 or img.shape[2] == 1:
        img = np.repeat(img.reshape(img.shape[0], img.shape[1], 1), 3, axis=2)
    lo, hi = img.min(), img.max()
    img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
    heat = colormaps["jet"](np.clip(cam, 0, 1))[..., :3]
    return (255 * ((1 - alpha) * img + alpha * heat)).round().astype(np.uint8)


def save_overlays(images, cams, path, titles=None, scale: int = 8) -> str:
    """One PNG with, per image, the input and its Grad-CAM overlay side by side (upscaled `scale`x)."""
    from PIL import Image

    from .serialization import atomic_write_bytes

    tiles = []
    for i, (img, cam) in enumerate(zip(images, cams)):
        ov = overlay(img, cam)
        base = overlay(img, np.zeros_like(cam), alpha=0.0)
        pair = np.concatenate([base, np.full((base.shape[0], 1, 3), 255, np.uint8), ov], axis=1)
        tiles.append(pair)
    if not tiles:
        raise ValueError("save_overlays needs at least one image")
    gap = np.full((1, tiles[0].shape[1], 3), 255, np.uint8)
    grid = np.concatenate([t for tile in tiles for t in (tile, gap)][:-1], axis=0)
    im = Image.fromarray(grid).resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.NEAREST)
    if titles:
        from PIL import ImageDraw
        draw = ImageDraw.Draw(im)
        step = (tiles[0].shape[0] + 1) * scale
        for i, t in enumerate(titles):
            draw.text((4, i * step + 2), str(t), fill=(255, 255, 0))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
    return str(path)
