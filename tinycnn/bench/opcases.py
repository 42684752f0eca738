"""Per-op benchmark cases: the shapes, the work each does, and how every implementation is called.

A case is one op at one shape. It knows how to make its inputs (seeded), how to call

* a tinycnn *primitive* (`kernel(name, x)`, docs/kernels.md) in a given kernel family
  ("numpy", "numba" on the CPU; "cupy", "numba_cuda" on a GPU), or, for "api" cases, the public
  autograd op (forward + backward through `Tensor.backward`) with that family selected;
* the PyTorch peer doing the same work (`torch.ops.aten` for the primitive-level ops, so both sides
  do exactly one forward or one backward), on the CPU and, when present, on CUDA;

and what its minimum work is: floating-point operations (`flops`, for GEMM-shaped ops) or bytes
that must cross the memory bus at least once (`bytes`, for memory-bound ops), for the roofline view.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

__all__ = ["Case", "grid", "conv_out"]

F32 = 4


def conv_out(h: int, k: int, s: int, p: int, d: int = 1) -> int:
    return (h + 2 * p - d * (k - 1) - 1) // s + 1


@dataclass
class Case:
    """One op at one shape. See the module docstring."""
    op: str
    kind: str                     # "primitive" (one kernel call) or "api" (public op, forward + backward)
    label: str
    params: dict
    make_inputs: Callable[[np.random.Generator], dict]
    tiny: Callable[[dict, Callable], Callable[[], tuple]] | None   # (inputs, kernel fn) -> closure (primitive)
    api: Callable[[dict], Callable[[], tuple]] | None               # inputs -> closure (public API)
    torch: Callable[[dict, object], Callable[[], tuple]]            # (torch inputs, torch module) -> closure
    flops: float | None = None
    bytes: float | None = None
    rtol: float = 2e-4
    atol_scale: float = 2e-4      # atol = atol_scale * max(1, max|reference|)
    int_outputs: tuple = field(default_factory=tuple)  # indices of outputs compared exactly


# ----------------------------------------------------------------------------- helpers
def _randn(rng, shape, dtype=np.float32):
    return rng.standard_normal(shape, dtype=np.float64).astype(dtype)


def _grad_reset(*tensors):
    for t in tensors:
        t.grad = None


# ----------------------------------------------------------------------------- convolution
def _conv_cases(shapes) -> list[Case]:
    cases = []
    for n, c, h, o, k, s in shapes:
        p = k // 2
        oh = conv_out(h, k, s, p)
        flops = 2.0 * n * o * oh * oh * c * k * k
        params = dict(N=n, C=c, H=h, W=h, O=o, k=k, stride=s, padding=p)
        label = f"N{n} C{c} {h}x{h} O{o} k{k} s{s}"
        st, pd, dl = (s, s), (p, p), (1, 1)

        def make(rng, n=n, c=c, h=h, o=o, k=k, oh=oh):
            return {"x": _randn(rng, (n, c, h, h)), "w": _randn(rng, (o, c, k, k)) / np.float32(np.sqrt(c * k * k)),
                    "b": _randn(rng, (o,)), "gy": _randn(rng, (n, o, oh, oh))}

        cases.append(Case(
            "conv2d_forward", "primitive", label, params, make,
            tiny=lambda i, fn, st=st, pd=pd: (lambda: (fn(i["x"], i["w"], st, pd, dl, 1),)),
            api=None,
            torch=lambda i, T, st=st, pd=pd: (lambda: (T.nn.functional.conv2d(i["x"], i["w"], None, st, pd, dl, 1),)),
            flops=flops))
        cases.append(Case(
            "conv2d_backward_data", "primitive", label, params, make,
            tiny=lambda i, fn, st=st, pd=pd: (lambda: (fn(i["gy"], i["w"], i["x"].shape, st, pd, dl, 1),)),
            api=None,
            torch=lambda i, T, st=st, pd=pd: (lambda: (T.ops.aten.convolution_backward(
                i["gy"], i["x"], i["w"], None, list(st), list(pd), list(dl), False, [0, 0], 1,
                [True, False, False])[0],)),
            flops=flops))
        cases.append(Case(
            "conv2d_backward_weight", "primitive", label, params, make,
            tiny=lambda i, fn, st=st, pd=pd: (lambda: (fn(i["gy"], i["x"], i["w"].shape, st, pd, dl, 1),)),
            api=None,
            torch=lambda i, T, st=st, pd=pd: (lambda: (T.ops.aten.convolution_backward(
                i["gy"], i["x"], i["w"], None, list(st), list(pd), list(dl), False, [0, 0], 1,
                [False, True, False])[1],)),
            flops=flops))
        cases.append(Case(
            "conv2d", "api", label, params, make, tiny=None,
            api=lambda i, st=st, pd=pd: _api_conv(i, st, pd),
            torch=lambda i, T, st=st, pd=pd: _torch_conv(i, T, st, pd),
            flops=3 * flops))
    return cases


def _api_conv(i, st, pd):
    import tinycnn  # noqa: PLC0415
    F = tinycnn.nn.functional
    conv2d = F.conv2d  # AttributeError here means "not written yet": the caller records it
    x = tinycnn.Tensor._wrap(i["x"], requires_grad=True)
    w = tinycnn.Tensor._wrap(i["w"], requires_grad=True)
    b = tinycnn.Tensor._wrap(i["b"], requires_grad=True)

    def call():
        _grad_reset(x, w, b)
        y = conv2d(x, w, b, stride=st, padding=pd)
        y.backward(i["gy"])
        return y.data, x.grad.data, w.grad.data, b.grad.data
    return call


def _torch_conv(i, T, st, pd):
    x, w, b = (i[k].detach().requires_grad_(True) for k in ("x", "w", "b"))

    def call():
        _grad_reset(x, w, b)
        y = T.nn.functional.conv2d(x, w, b, st, pd)
        y.backward(i["gy"])
        return y, x.grad, w.grad, b.grad
    return call


# ----------------------------------------------------------------------------- pooling
def _pool_cases(shapes) -> list[Case]:
    cases = []
    for n, c, h, k, s, p in shapes:
        oh = conv_out(h, k, s, p)
        params = dict(N=n, C=c, H=h, W=h, k=k, stride=s, padding=p)
        label = f"N{n} C{c} {h}x{h} k{k} s{s} p{p}"
        kk, ss, pp = (k, k), (s, s), (p, p)
        xb, yb = n * c * h * h * F32, n * c * oh * oh * F32

        def make(rng, n=n, c=c, h=h, oh=oh, kk=kk, ss=ss, pp=pp):
            x = _randn(rng, (n, c, h, h))
            # the backward primitive needs the forward's argmax; computed once with NumPy strides so
            # every implementation starts from the same indices (random floats: no ties)
            return {"x": x, "gy": _randn(rng, (n, c, oh, oh)), "idx": _argmax_pool(x, kk, ss, pp, oh)}

        cases.append(Case(
            "max_pool2d_forward", "primitive", label, params, make,
            tiny=lambda i, fn, kk=kk, ss=ss, pp=pp: (lambda: tuple(fn(i["x"], kk, ss, pp))),
            api=None,
            torch=lambda i, T, kk=kk, ss=ss, pp=pp: (lambda: T.nn.functional.max_pool2d(
                i["x"], kk, ss, pp, return_indices=True)),
            bytes=xb + 2 * yb, int_outputs=(1,)))
        cases.append(Case(
            "max_pool2d_backward", "primitive", label, params, make,
            tiny=lambda i, fn: (lambda: (fn(i["gy"], i["idx"], i["x"].shape),)),
            api=None,
            torch=lambda i, T, kk=kk, ss=ss, pp=pp: _torch_maxpool_bwd(i, T, kk, ss, pp),
            bytes=xb + 2 * yb))
        cases.append(Case(
            "avg_pool2d_forward", "primitive", label, params, make,
            tiny=lambda i, fn, kk=kk, ss=ss, pp=pp: (lambda: (fn(i["x"], kk, ss, pp),)),
            api=None,
            torch=lambda i, T, kk=kk, ss=ss, pp=pp: (lambda: (T.nn.functional.avg_pool2d(i["x"], kk, ss, pp),)),
            bytes=xb + yb))
        cases.append(Case(
            "avg_pool2d_backward", "primitive", label, params, make,
            tiny=lambda i, fn, kk=kk, ss=ss, pp=pp: (lambda: (fn(i["gy"], i["x"].shape, kk, ss, pp),)),
            api=None,
            torch=lambda i, T, kk=kk, ss=ss, pp=pp: (lambda: (T.ops.aten.avg_pool2d_backward(
                i["gy"], i["x"], list(kk), list(ss), list(pp), False, True, None),)),
            bytes=xb + yb))
        cases.append(Case(
            "max_pool2d", "api", label, params, make, tiny=None,
            api=lambda i, kk=kk, ss=ss, pp=pp: _api_unary(i, "max_pool2d", kk, ss, pp),
            torch=lambda i, T, kk=kk, ss=ss, pp=pp: _torch_unary(i, T.nn.functional.max_pool2d, kk, ss, pp),
            bytes=2 * xb + 3 * yb))
    return cases


def _argmax_pool(x, kk, ss, pp, oh):
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pp[0], pp[0]), (pp[1], pp[1])), constant_values=-np.inf)
    best = np.full((n, c, oh, oh), -np.inf, x.dtype)
    idx = np.zeros((n, c, oh, oh), np.int64)
    rows = np.arange(oh) * ss[0]
    cols = np.arange(oh) * ss[1]
    for a in range(kk[0]):
        for b in range(kk[1]):
            v = xp[:, :, a:a + ss[0] * (oh - 1) + 1:ss[0], b:b + ss[1] * (oh - 1) + 1:ss[1]]
            flat = (rows[:, None] + a - pp[0]) * w + (cols[None, :] + b - pp[1])
            better = v > best   # strict: ties keep the first in row-major window order
            best = np.where(better, v, best)
            idx = np.where(better, flat, idx)
    return idx.astype(np.int32)


def _torch_maxpool_bwd(i, T, kk, ss, pp):
    idx = i["idx"].long()

    def call():
        return (T.ops.aten.max_pool2d_with_indices_backward(i["gy"], i["x"], list(kk), list(ss), list(pp),
                                                            [1, 1], False, idx),)
    return call


def _api_unary(i, name, *args):
    import tinycnn  # noqa: PLC0415
    fn = getattr(tinycnn.nn.functional, name)
    x = tinycnn.Tensor._wrap(i["x"], requires_grad=True)

    def call():
        _grad_reset(x)
        y = fn(x, *args)
        y.backward(i["gy"])
        return y.data, x.grad.data
    return call


def _torch_unary(i, fn, *args):
    x = i["x"].detach().requires_grad_(True)

    def call():
        _grad_reset(x)
        y = fn(x, *args)
        y.backward(i["gy"])
        return y, x.grad
    return call


# ----------------------------------------------------------------------------- linear / GEMM
def _linear_cases(shapes) -> list[Case]:
    cases = []
    for n, fin, fout in shapes:
        params = dict(N=n, in_features=fin, out_features=fout)
        label = f"N{n} {fin}->{fout}"

        def make(rng, n=n, fin=fin, fout=fout):
            return {"x": _randn(rng, (n, fin)), "w": _randn(rng, (fout, fin)) / np.float32(np.sqrt(fin)),
                    "b": _randn(rng, (fout,)), "gy": _randn(rng, (n, fout))}
        cases.append(Case(
            "linear", "api", label, params, make, tiny=None, api=_api_linear,
            torch=_torch_linear, flops=3 * 2.0 * n * fin * fout))
    return cases


def _api_linear(i):
    import tinycnn  # noqa: PLC0415
    linear = tinycnn.nn.functional.linear
    x, w, b = (tinycnn.Tensor._wrap(i[k], requires_grad=True) for k in ("x", "w", "b"))

    def call():
        _grad_reset(x, w, b)
        y = linear(x, w, b)
        y.backward(i["gy"])
        return y.data, x.grad.data, w.grad.data, b.grad.data
    return call


def _torch_linear(i, T):
    x, w, b = (i[k].detach().requires_grad_(True) for k in ("x", "w", "b"))

    def call():
        _grad_reset(x, w, b)
        y = T.nn.functional.linear(x, w, b)
        y.backward(i["gy"])
        return y, x.grad, w.grad, b.grad
    return call


def _matmul_cases(sizes) -> list[Case]:
    cases = []
    for m, k, n in sizes:
        def make(rng, m=m, k=k, n=n):
            return {"a": _randn(rng, (m, k)), "b": _randn(rng, (k, n)) / np.float32(np.sqrt(k))}
        cases.append(Case(
            "matmul", "primitive", f"{m}x{k} @ {k}x{n}", dict(M=m, K=k, N=n), make,
            tiny=lambda i, fn: (lambda: (fn(i["a"], i["b"]),)), api=None,
            torch=lambda i, T: (lambda: (T.mm(i["a"], i["b"]),)), flops=2.0 * m * k * n))
    return cases


# ----------------------------------------------------------------------------- loss
def _ce_cases(shapes) -> list[Case]:
    cases = []
    for n, c in shapes:
        params = dict(N=n, classes=c)
        label = f"N{n} classes{c}"
        b = 2 * n * c * F32

        def make(rng, n=n, c=c):
            logits = _randn(rng, (n, c)) * np.float32(3)
            z = logits - logits.max(1, keepdims=True)
            logp = (z - np.log(np.exp(z).sum(1, keepdims=True))).astype(np.float32)
            return {"logits": logits, "target": rng.integers(0, c, n).astype(np.int64), "logp": logp,
                    "gscale": np.full(n, 1.0 / n, np.float32)}

        cases.append(Case(
            "cross_entropy_forward", "primitive", label, params, make,
            tiny=lambda i, fn: (lambda: (fn(i["logits"], i["target"], None, 0.0)[0],)), api=None,
            torch=lambda i, T: (lambda: (T.nn.functional.cross_entropy(i["logits"], i["target"], reduction="none"),)),
            bytes=b))
        cases.append(Case(
            "cross_entropy_backward", "primitive", label, params, make,
            tiny=lambda i, fn: (lambda: (fn(i["logp"], i["target"], None, 0.0, i["gscale"]),)), api=None,
            torch=_torch_ce_bwd, bytes=b))
        cases.append(Case(
            "cross_entropy", "api", label, params, make, tiny=None, api=_api_ce, torch=_torch_ce, bytes=2 * b))
    return cases


def _torch_ce_bwd(i, T):
    total = T.tensor(float(i["target"].shape[0]))

    def call():
        g = T.ops.aten.nll_loss_backward(i["gscale"], i["logp"], i["target"], None, 0, -100, total)
        return (T.ops.aten._log_softmax_backward_data(g, i["logp"], 1, T.float32),)
    return call


def _api_ce(i):
    import tinycnn  # noqa: PLC0415
    ce = tinycnn.nn.functional.cross_entropy
    z = tinycnn.Tensor._wrap(i["logits"], requires_grad=True)

    def call():
        _grad_reset(z)
        loss = ce(z, i["target"])
        loss.backward()
        return loss.data, z.grad.data
    return call


def _torch_ce(i, T):
    z = i["logits"].detach().requires_grad_(True)

    def call():
        _grad_reset(z)
        loss = T.nn.functional.cross_entropy(z, i["target"])
        loss.backward()
        return loss, z.grad
    return call


# ----------------------------------------------------------------------------- batch norm
def _bn_cases(shapes) -> list[Case]:
    cases = []
    eps = 1e-5
    for n, c, h in shapes:
        params = dict(N=n, C=c, H=h, W=h)
        label = f"N{n} C{c} {h}x{h}"
        xb = n * c * h * h * F32

        def make(rng, n=n, c=c, h=h):
            x = _randn(rng, (n, c, h, h)) * np.float32(2) + np.float32(0.5)
            x64 = x.astype(np.float64)
            mean = x64.mean(axis=(0, 2, 3))
            invstd = 1.0 / np.sqrt(x64.var(axis=(0, 2, 3)) + eps)
            return {"x": x, "gamma": _randn(rng, (c,)), "beta": _randn(rng, (c,)), "gy": _randn(rng, (n, c, h, h)),
                    "mean": mean.astype(np.float32), "invstd": invstd.astype(np.float32),
                    "rm": np.zeros(c, np.float32), "rv": np.ones(c, np.float32)}

        cases.append(Case(
            "batch_norm_forward_train", "primitive", label, params, make,
            tiny=lambda i, fn: (lambda: tuple(fn(i["x"], i["gamma"], i["beta"], eps))), api=None,
            torch=lambda i, T: (lambda: T.ops.aten.native_batch_norm(
                i["x"], i["gamma"], i["beta"], None, None, True, 0.0, eps)),
            bytes=2 * xb))
        cases.append(Case(
            "batch_norm_backward", "primitive", label, params, make,
            tiny=lambda i, fn: (lambda: tuple(fn(i["gy"], i["x"], i["gamma"], i["mean"], i["invstd"]))), api=None,
            torch=lambda i, T: (lambda: T.ops.aten.native_batch_norm_backward(
                i["gy"], i["x"], i["gamma"], None, None, i["mean"], i["invstd"], True, eps, [True, True, True])),
            bytes=3 * xb, atol_scale=1e-3))
        cases.append(Case(
            "batch_norm", "api", label, params, make, tiny=None, api=_api_bn, torch=_torch_bn,
            bytes=5 * xb, atol_scale=1e-3))
    return cases


def _api_bn(i):
    import tinycnn  # noqa: PLC0415
    bn = tinycnn.nn.functional.batch_norm
    x, g, b = (tinycnn.Tensor._wrap(i[k], requires_grad=True) for k in ("x", "gamma", "beta"))
    rm, rv = i["rm"], i["rv"]

    def call():
        _grad_reset(x, g, b)
        y = bn(x, tinycnn.Tensor._wrap(rm), tinycnn.Tensor._wrap(rv), g, b, training=True)
        y.backward(i["gy"])
        return y.data, x.grad.data, g.grad.data, b.grad.data
    return call


def _torch_bn(i, T):
    x, g, b = (i[k].detach().requires_grad_(True) for k in ("x", "gamma", "beta"))

    def call():
        _grad_reset(x, g, b)
        y = T.nn.functional.batch_norm(x, i["rm"], i["rv"], g, b, training=True)
        y.backward(i["gy"])
        return y, x.grad, g.grad, b.grad
    return call


# ----------------------------------------------------------------------------- elementwise, optimizer
def _bias_relu_cases(shapes) -> list[Case]:
    cases = []
    for n, c, h in shapes:
        def make(rng, n=n, c=c, h=h):
            return {"y": _randn(rng, (n, c, h, h)), "b": _randn(rng, (c,))}
        cases.append(Case(
            "bias_relu", "primitive", f"N{n} C{c} {h}x{h}", dict(N=n, C=c, H=h, W=h), make,
            tiny=lambda i, fn: (lambda: (fn(i["y"], i["b"]),)), api=None,
            torch=lambda i, T: (lambda: (T.relu(i["y"] + i["b"][None, :, None, None]),)),
            bytes=2 * n * c * h * h * F32))
    return cases


ADAM = dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0)


def _adam_cases(sizes) -> list[Case]:
    cases = []
    for size in sizes:
        def make(rng, size=size):
            return {"param": _randn(rng, (size,)), "grad": _randn(rng, (size,)),
                    "exp_avg": np.zeros(size, np.float32), "exp_avg_sq": np.zeros(size, np.float32)}
        cases.append(Case(
            "adam_step", "primitive", f"{size:,} params", dict(numel=size), make,
            tiny=_tiny_adam, api=None, torch=_torch_adam, bytes=7 * size * F32, rtol=1e-5, atol_scale=1e-6))
    return cases


def _tiny_adam(i, fn):
    a = ADAM

    def call():
        # step=1 every call: the same work each time, and after the first call the result equals
        # PyTorch's first step (what the correctness check compares)
        fn(i["param"], i["grad"], i["exp_avg"], i["exp_avg_sq"], 1, a["lr"], a["beta1"], a["beta2"], a["eps"],
           a["weight_decay"], False)
        return i["param"], i["exp_avg"], i["exp_avg_sq"]
    return call


def _torch_adam(i, T):
    p = T.nn.Parameter(i["param"])
    p.grad = i["grad"]
    opt = T.optim.Adam([p], lr=ADAM["lr"], betas=(ADAM["beta1"], ADAM["beta2"]), eps=ADAM["eps"], foreach=False)

    def call():
        opt.step()
        st = opt.state[p]
        return p.detach(), st["exp_avg"], st["exp_avg_sq"]
    return call


# ----------------------------------------------------------------------------- the grids
def grid(quick: bool, ops: set[str] | None = None) -> list[Case]:
    """The cases of the quick or the full suite (optionally only those whose op is in `ops`)."""
    if quick:
        conv = [(32, 1, 28, 32, 3, 1), (32, 32, 14, 64, 3, 1), (32, 64, 14, 128, 1, 2)]
        pool = [(32, 32, 28, 2, 2, 0), (32, 64, 14, 3, 2, 1)]
        lin = [(32, 3136, 128)]
        mm = [(512, 512, 512)]
        ce = [(128, 2)]
        bn = [(32, 32, 28)]
        br = [(32, 32, 28)]
        adam = [421_642]
    else:
        conv = [(1, 1, 28, 32, 3, 1), (128, 1, 28, 32, 3, 1), (512, 1, 28, 32, 5, 1), (128, 32, 14, 64, 3, 1),
                (128, 64, 28, 64, 3, 1), (128, 64, 28, 128, 3, 2), (128, 64, 28, 128, 1, 2),
                (128, 128, 14, 128, 3, 1), (128, 256, 7, 256, 3, 1), (16, 3, 224, 32, 5, 2),
                (8, 32, 112, 32, 3, 1), (4, 64, 224, 64, 3, 2)]
        pool = [(128, 32, 28, 2, 2, 0), (128, 64, 14, 2, 2, 0), (512, 32, 28, 2, 2, 0), (128, 64, 56, 3, 2, 1),
                (8, 64, 112, 2, 2, 0), (16, 32, 224, 2, 2, 0)]
        lin = [(1, 3136, 128), (128, 3136, 128), (128, 128, 2), (512, 512, 10)]
        mm = [(512, 512, 512), (2048, 2048, 2048), (6272, 288, 64), (128, 3136, 128)]
        ce = [(128, 2), (512, 10), (128, 1000)]
        bn = [(128, 32, 28), (128, 64, 28), (128, 256, 7), (16, 64, 112)]
        br = [(128, 32, 28), (128, 64, 14), (16, 64, 112)]
        adam = [421_642, 11_170_000]
    cases = (_conv_cases(conv) + _pool_cases(pool) + _linear_cases(lin) + _matmul_cases(mm) + _ce_cases(ce)
             + _bn_cases(bn) + _bias_relu_cases(br) + _adam_cases(adam))
    if ops:
        cases = [c for c in cases if c.op in ops]
    return cases
