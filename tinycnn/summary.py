"""Model summary: one row per leaf layer with its output shape, parameter count and FLOPs.

FLOPs count one multiply-add as 2 operations, for a single input image (batch 1):

    Conv2d      2 * C_out * H_out * W_out * (C_in / groups) * kH * kW  (+ C_out*H_out*W_out with bias)
    Linear      2 * in_features * out_features                         (+ out_features with bias)
    BatchNorm   2 * numel(output)   (scale and shift; folded into the conv at inference by some engines)
    ReLU, pooling, dropout, ...: numel(output) (one comparison or op per output value; pooling windows
                and average pooling count numel(input))
Shapes come from running a zero image through the model in eval mode with forward hooks on the
leaf modules, so any architecture built from `tinycnn.nn` layers is summarised without special cases.
"""
from __future__ import annotations

import numpy as np

__all__ = ["summarize", "format_summary", "parse_input_shape"]


def parse_input_shape(text: str) -> tuple:
    """"1,28,28" -> (1, 28, 28); ValueError naming the argument otherwise."""
    try:
        dims = tuple(int(v) for v in str(text).replace("x", ",").split(","))
    except ValueError:
        raise ValueError(f"--input must be C,H,W with positive ints (e.g. 1,28,28), got {text!r}") from None
    if len(dims) != 3 or min(dims) < 1:
        raise ValueError(f"--input must be C,H,W with positive ints (e.g. 1,28,28), got {text!r}")
    return dims


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _flops(mod, inp_shape, out_shape) -> int:
    kind = type(mod).__name__
    n_out = int(np.prod(out_shape))
    if kind == "Conv2d":
        kh, kw = _pair(mod.kernel_size)
        f = 2 * n_out * (mod.in_channels // getattr(mod, "groups", 1)) * kh * kw
        return f + (n_out if getattr(mod, "bias", None) is not None else 0)
    if kind == "Linear":
        rows = n_out // mod.out_features
        f = 2 * rows * mod.in_features * mod.out_features
        return f + (n_out if getattr(mod, "bias", None) is not None else 0)
    if kind.startswith("BatchNorm"):
        return 2 * n_out
    if kind in ("MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d") and inp_shape is not None:
        return int(np.prod(inp_shape))
    if kind in ("Flatten", "Identity", "Dropout"):
        return 0
    return n_out


def summarize(model, input_shape, device: str = "cpu") -> dict:
    """{"rows": [...], "total_params", "trainable_params", "total_flops", "input_shape", "output_shape"}.

    Each row: name (dotted path), type, output_shape (without the batch axis), params (own parameters),
    flops (for one image).
    """
    import tinycnn

    c, h, w = input_shape
    leaves = [(n, m) for n, m in model.named_modules() if n and not list(m.children())]
    rows, handles = [], []

    def make_hook(name, mod):
        def hook(module, inputs, output):
            x = inputs[0] if isinstance(inputs, tuple) and inputs else inputs
            ishape = tuple(x.shape) if hasattr(x, "shape") else None
            oshape = tuple(output.shape)
            own = sum(int(np.prod(p.shape)) for p in mod.parameters(recurse=False))
            rows.append({"name": name, "type": type(mod).__name__, "output_shape": list(oshape[1:]),
                         "params": own, "flops": int(_flops(mod, ishape[1:] if ishape else None, oshape[1:]))})
        return hook

    for name, mod in leaves:
        handles.append(mod.register_forward_hook(make_hook(name, mod)))
    was_training = model.training
    model.eval()
    try:
        with tinycnn.no_grad():
            x = tinycnn.zeros(1, c, h, w, device=device)
            out = model(x)
    finally:
        for hd in handles:
            hd.remove()
        model.train(was_training)
    params = list(model.parameters())
    return {"rows": rows, "input_shape": [c, h, w], "output_shape": list(out.shape[1:]),
            "total_params": sum(int(np.prod(p.shape)) for p in params),
            "trainable_params": sum(int(np.prod(p.shape)) for p in params if p.requires_grad),
            "total_flops": sum(r["flops"] for r in rows)}


def _human(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return str(int(n))


def format_summary(s: dict, title: str = "") -> str:
    """The summary as a fixed-width text table."""
    head = ("layer", "type", "output shape", "params", "FLOPs")
    body = [(r["name"], r["type"], "x".join(str(d) for d in r["output_shape"]), f"{r['params']:,}",
             _human(r["flops"])) for r in s["rows"]]
    widths = [max(len(head[i]), *(len(b[i]) for b in body)) if body else len(head[i]) for i in range(5)]
    line = "-" * (sum(widths) + 2 * 4)
    fmt = lambda row: "  ".join(v.ljust(widths[i]) if i < 3 else v.rjust(widths[i]) for i, v in enumerate(row))  # noqa: E731
    out = []
    if title:
        out.append(title)
    out += [fmt(head), line] + [fmt(b) for b in body] + [line]
    out.append(f"input {'x'.join(map(str, s['input_shape']))} -> output {'x'.join(map(str, s['output_shape']))}")
    out.append(f"total params: {s['total_params']:,}  (trainable {s['trainable_params']:,})")
    out.append(f"FLOPs per image (forward, multiply-add = 2): {_human(s['total_flops'])} ({s['total_flops']:,})")
    return "\n".join(out)
