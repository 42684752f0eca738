"""Grid pictures of what a conv net holds: the activations of one layer and the kernels of a conv.

Layout, shared by both pictures: n tiles in a near-square grid of ``cols = ceil(sqrt(n))`` columns and
``rows = ceil(n / cols)`` rows, read row by row; each tile is upscaled ``scale`` times (nearest neighbour)
and tiles are separated by ``pad`` pixels of ``PAD_COLOR`` (pure white, which neither colour map used
here produces, so the tiles can be counted from the picture). Grid slots past n are left white.

- ``feature_maps``: the output A (N, K, h, w) of a layer for one image, captured with a forward hook;
  one tile per channel k, each min-max scaled to [0, 1] on its own (activations differ in range
  across channels) and drawn with the "viridis" colour map.
- ``filters``: the weights W (O, C/G, kH, kW) of a conv; one tile per (output, input) channel pair,
  output channel o in row o and input channel c in column c (a single-input conv uses the near-square
  grid instead). Weights have a sign, so each tile is drawn with the diverging "RdBu_r" map symmetric
  around 0: blue < 0 < red, with the tile's largest |w| at full colour.
"""
from __future__ import annotations

import io
import math

import numpy as np

__all__ = ["feature_maps", "filters", "tile_grid", "grid_layout", "PAD_COLOR"]

PAD_COLOR = (255, 255, 255)


def grid_layout(n: int, cols: int | None = None) -> tuple[int, int]:
    """(rows, cols) of the grid that holds n tiles: near-square unless `cols` is given."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n (the number of tiles) must be a positive int, got {n!r}")
    if cols is None:
        cols = math.ceil(math.sqrt(n))
    elif isinstance(cols, bool) or not isinstance(cols, (int, np.integer)) or cols < 1:
        raise ValueError(f"cols must be a positive int, got {cols!r}")
    cols = min(int(cols), int(n))
    return math.ceil(n / cols), cols


def _auto_scale(h: int, w: int) -> int:
    # small maps (7x7, 3x3 kernels) become at least ~48 px a side so a person can see them
    return max(1, math.ceil(48 / max(h, w)))


def tile_grid(tiles: np.ndarray, cols: int | None = None, scale: int = 1, pad: int = 2) -> np.ndarray:
    """Lay out RGB tiles (n, h, w, 3) uint8 on a grid; returns the picture (H, W, 3) uint8 with
    H = rows (h scale + pad) + pad and W = cols (w scale + pad) + pad."""
    tiles = np.asarray(tiles)
    if tiles.ndim != 4 or tiles.shape[3] != 3 or tiles.dtype != np.uint8:
        raise ValueError(f"tiles must be a uint8 array of shape (n, h, w, 3), got {tiles.dtype} {tiles.shape}")
    for name, v, lo in (("scale", scale, 1), ("pad", pad, 0)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ValueError(f"{name} must be an int >= {lo}, got {v!r}")
    n, h, w, _ = tiles.shape
    rows, cols = grid_layout(n, cols)
    th, tw = h * scale, w * scale
    out = np.empty((rows * (th + pad) + pad, cols * (tw + pad) + pad, 3), np.uint8)
    out[:] = PAD_COLOR
    big = tiles.repeat(scale, axis=1).repeat(scale, axis=2)
    for i in range(n):
        r, c = divmod(i, cols)
        y, x = pad + r * (th + pad), pad + c * (tw + pad)
        out[y:y + th, x:x + tw] = big[i]
    return out


def _colorize(values: np.ndarray, cmap: str) -> np.ndarray:
    from matplotlib import colormaps

    rgb = colormaps[cmap](np.clip(values, 0.0, 1.0))[..., :3]
    return (255 * rgb).round().astype(np.uint8)


def _save_png(picture: np.ndarray, path) -> str:
    from PIL import Image

    from ..serialization import atomic_write_bytes

    buf = io.BytesIO()
    Image.fromarray(picture).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
    return str(path)


def _host(a) -> np.ndarray:
    from ..tensor import Tensor

    if isinstance(a, Tensor):
        return a.numpy()
    return np.asarray(a)


def _resolve_layer(model, layer):
    if isinstance(layer, str):
        modules = dict(model.named_modules())
        if layer == "" or layer not in modules:
            names = ", ".join(n for n in modules if n)
            raise ValueError(f"layer {layer!r} is not in the model; its layers are: {names}")
        return modules[layer]
    if not hasattr(layer, "register_forward_hook"):
        raise TypeError(f"layer must be a Module or a dotted layer name, got {type(layer).__name__}")
    if not any(m is layer for m in model.modules()):
        raise ValueError(f"layer {type(layer).__name__} is not a submodule of the model")
    return layer


def feature_maps(model, image, layer, path=None, cols: int | None = None, scale: int | None = None,
                 pad: int = 2) -> np.ndarray:
    """The activations of `layer` for one `image`, optionally saved as a grid PNG (one tile per channel).

    model: a tinycnn Module. image: (C, H, W) or (1, C, H, W), a NumPy array or a Tensor, already
        normalised as the model expects. layer: a Module inside `model` or its dotted name ("0", "features.3").
    path: where to write the PNG (see the module docstring for the layout); None writes nothing.
    cols / scale / pad: grid columns (default near-square), tile upscaling (default: tiles >= 48 px),
        pixels between tiles.
    Returns the maps A[0] of shape (K, h, w) as float32 on the host. The image is moved to the model's
    device (that of its first parameter). The model runs in eval mode under no_grad
    (its training flag is restored) and the hook is removed afterwards.
    """
    import tinycnn

    if not hasattr(model, "named_modules") or not callable(model):
        raise TypeError(f"model must be a tinycnn Module, got {type(model).__name__}")
    mod = _resolve_layer(model, layer)
    x = _host(image) if not isinstance(image, tinycnn.Tensor) else image
    if x.ndim == 3:
        x = x.reshape((1,) + tuple(x.shape))
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"image must have shape (C, H, W) or (1, C, H, W), got shape {tuple(x.shape)}")
    device = next((q.device for q in model.parameters()), "cpu")
    if not isinstance(x, tinycnn.Tensor):
        x = tinycnn.tensor(np.asarray(x, dtype=np.float32), device=device)
    elif x.device != device:
        x = x.to(device)
    store = {}

    def hook(module, inputs, output):
        store["A"] = output

    handle = mod.register_forward_hook(hook)
    was_training = model.training
    model.eval()
    try:
        with tinycnn.no_grad():
            model(x)
    finally:
        handle.remove()
        model.train(was_training)
    if "A" not in store:
        raise ValueError("the layer was not used in the model's forward pass")
    maps = _host(store["A"])
    if maps.ndim != 4:
        raise ValueError(f"layer must output (N, K, h, w) feature maps, got shape {maps.shape}")
    maps = maps[0].astype(np.float32)
    if path is not None:
        m = maps.astype(np.float64)
        lo = m.min(axis=(1, 2), keepdims=True)
        span = m.max(axis=(1, 2), keepdims=True) - lo
        scaled = (m - lo) / np.where(span > 0, span, 1.0)
        k, h, w = maps.shape
        picture = tile_grid(_colorize(scaled, "viridis"), cols=cols, scale=scale or _auto_scale(h, w), pad=pad)
        _save_png(picture, path)
    return maps


def filters(conv, path=None, cols: int | None = None, scale: int | None = None, pad: int = 2) -> np.ndarray:
    """The kernels of a conv layer, optionally saved as a grid PNG (one tile per (out, in) channel pair).

    conv: a Conv2d (anything with a 4-D `weight`), or the weight itself (O, C, kH, kW) as array/Tensor.
    path: where to write the PNG; None writes nothing. cols: override the columns (default: C columns,
        or near-square when C == 1). scale / pad: as in `feature_maps`.
    Returns the weights as a float32 array (O, C, kH, kW).
    """
    w = getattr(conv, "weight", conv)
    if w is None or not (hasattr(w, "shape") and hasattr(w, "ndim")):
        raise TypeError(f"conv must be a Conv2d module or a 4-D weight, got {type(conv).__name__}")
    w = _host(w).astype(np.float32)
    if w.ndim != 4:
        raise ValueError(f"conv weight must have shape (O, C, kH, kW), got shape {w.shape}")
    if path is not None:
        o, c, kh, kw = w.shape
        tiles = w.reshape(o * c, kh, kw).astype(np.float64)
        peak = np.abs(tiles).max(axis=(1, 2), keepdims=True)
        scaled = 0.5 + 0.5 * tiles / np.where(peak > 0, peak, 1.0)
        if cols is None and c > 1:
            cols = c
        picture = tile_grid(_colorize(scaled, "RdBu_r"), cols=cols, scale=scale or _auto_scale(kh, kw), pad=pad)
        _save_png(picture, path)
    return w
