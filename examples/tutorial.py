"""The tinycnn learning path: a CNN built up from its formulas, every claim checked as it runs.

    python examples/tutorial.py [--fast] [--data-dir DIR] [--out DIR] [--epochs N] [--seed S]

The runnable twin of docs/tutorial.md: the same seven sections, in the same order. Each section prints
what it shows and asserts each equality it claims, so if the library and the text ever disagree this
script fails (the test suite runs it with --fast). `--fast` (or TINYCNN_TUTORIAL_FAST=1) trains on a small
subset for one epoch so the whole script takes well under a minute on two cores. `--out DIR` also writes
the pictures (graph DOT, feature maps, filters, Grad-CAM) there.
"""
from __future__ import annotations

import argparse
import os
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # runs from a checkout without installing

import tinycnn  # noqa: E402
import tinycnn.nn.functional as F  # noqa: E402
from tinycnn import nn, optim, viz  # noqa: E402

EXACT = dict(rtol=1e-12, atol=1e-12)  # float64 throughout the derivations: equal up to rounding


def header(n, title):
    print(f"\n{'=' * 78}\n({n}) {title}\n{'=' * 78}")


def show(label, array, precision=3):
    print(f"  {label}")
    print(textwrap.indent(np.array2string(np.asarray(array), precision=precision, suppress_small=True,
                                              max_line_width=110), "    "))


def check(name, got, want, **tol):
    np.testing.assert_allclose(got, want, **(tol or EXACT), err_msg=name)
    print(f"  ok  {name}")


# ----------------------------------------------------------------------------------------------------
# (1) Convolution: loops, im2col + GEMM, F.conv2d
# ----------------------------------------------------------------------------------------------------
def conv_loops(x, w, b, stride=1, padding=0):
    """y[n, o, i, j] = b[o] + sum_{c, u, v} w[o, c, u, v] * x_pad[n, c, i*s + u, j*s + v]"""
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    oh = (h + 2 * padding - kh) // stride + 1
    ow = (wd + 2 * padding - kw) // stride + 1
    y = np.zeros((n, o, oh, ow))
    for ni in range(n):
        for oi in range(o):
            for i in range(oh):
                for j in range(ow):
                    patch = xp[ni, :, i * stride:i * stride + kh, j * stride:j * stride + kw]
                    y[ni, oi, i, j] = b[oi] + np.sum(w[oi] * patch)
    return y


def im2col(x, kh, kw, stride=1, padding=0):
    """cols[n, (c, u, v), (i, j)] = x_pad[n, c, i*s + u, j*s + v]: one strided slice per tap (u, v)."""
    n, c, h, wd = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    oh = (h + 2 * padding - kh) // stride + 1
    ow = (wd + 2 * padding - kw) // stride + 1
    cols = np.empty((n, c, kh, kw, oh, ow))
    for u in range(kh):
        for v in range(kw):
            cols[:, :, u, v] = xp[:, :, u:u + stride * oh:stride, v:v + stride * ow:stride]
    return cols.reshape(n, c * kh * kw, oh * ow), (oh, ow)


def conv_gemm(x, w, b, stride=1, padding=0):
    """y[n] = W_mat @ cols[n] + b, with W_mat = w.reshape(O, C*kH*kW): the whole conv is one GEMM."""
    o, c, kh, kw = w.shape
    cols, (oh, ow) = im2col(x, kh, kw, stride, padding)
    y = w.reshape(o, -1) @ cols + b[:, None]      # (O, Ckk) @ (N, Ckk, OH*OW) -> (N, O, OH*OW)
    return y.reshape(x.shape[0], o, oh, ow)


def section1():
    header(1, "a convolution by hand (loops), as im2col + GEMM, and with F.conv2d")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 2, 5, 5))         # one 5x5 image with 2 channels
    w = rng.standard_normal((3, 2, 3, 3))         # 3 filters of 2 x 3 x 3
    b = rng.standard_normal(3)
    for stride, padding in ((1, 0), (2, 1)):
        y_loops = conv_loops(x, w, b, stride, padding)
        y_gemm = conv_gemm(x, w, b, stride, padding)
        y_lib = F.conv2d(tinycnn.tensor(x), tinycnn.tensor(w), tinycnn.tensor(b),
                         stride=stride, padding=padding).numpy()
        print(f"stride={stride} padding={padding}: x {x.shape} * w {w.shape} -> y {y_loops.shape}")
        show("y[0, 0] by loops:", y_loops[0, 0])
        check("loops == im2col + GEMM", y_gemm, y_loops)
        check("loops == F.conv2d", y_lib, y_loops)
    # the library's own im2col primitive (docs/kernels.md) lays the columns out as (N, C, kH, kW, OH, OW)
    lib_cols = tinycnn.backends.kernel("im2col", x)(x, (3, 3), (1, 1), (0, 0), (1, 1))
    check("our im2col == the library's im2col kernel", lib_cols.reshape(1, 18, 9), im2col(x, 3, 3)[0])


# ----------------------------------------------------------------------------------------------------
# (2) The chain rule on a tiny graph
# ----------------------------------------------------------------------------------------------------
def tiny_graph(w, b, x, t):
    """L = sum((sigmoid(w * x + b) - t)^2)"""
    z = w * x + b
    a = z.sigmoid()
    return ((a - t) ** 2).sum()


def section2(out=None):
    header(2, "the chain rule on a tiny graph, checked by autograd and by gradcheck")
    rng = np.random.default_rng(1)
    w = tinycnn.tensor(rng.standard_normal(3), requires_grad=True)
    b = tinycnn.tensor(rng.standard_normal(1), requires_grad=True)
    x = tinycnn.tensor(rng.standard_normal(3), requires_grad=True)
    t = tinycnn.tensor(np.array([0.0, 1.0, 1.0]))
    loss = tiny_graph(w, b, x, t)
    dot = viz.graph(loss, params={"w": w, "b": b, "x": x, "t": t})
    print("the graph autograd recorded (Graphviz DOT; render with `dot -Tsvg`):")
    print(dot)
    if out is not None:
        viz.graph(loss, params={"w": w, "b": b, "x": x, "t": t}, path=Path(out) / "chain_rule.dot")
    loss.backward()

    # by hand: dL/da = 2 (a - t);  da/dz = a (1 - a);  dz/dw = x, dz/db = 1, dz/dx = w
    wn, bn, xn, tn = w.numpy(), b.numpy(), x.numpy(), t.numpy()
    a = 1 / (1 + np.exp(-(wn * xn + bn)))
    dL_dz = 2 * (a - tn) * a * (1 - a)
    check("dL/dw = 2(a - t) a(1 - a) x", w.grad.numpy(), dL_dz * xn)
    check("dL/db = sum 2(a - t) a(1 - a)  (b was broadcast, so its gradient sums)", b.grad.numpy(),
          [dL_dz.sum()])
    check("dL/dx = 2(a - t) a(1 - a) w", x.grad.numpy(), dL_dz * wn)
    fresh = [tinycnn.tensor(a, requires_grad=True) for a in (wn, bn, xn)]
    assert tinycnn.gradcheck(lambda w, b, x: tiny_graph(w, b, x, t), fresh)
    print("  ok  gradcheck: central differences agree with autograd for w, b and x")


# ----------------------------------------------------------------------------------------------------
# (3) Conv and pooling backward
# ----------------------------------------------------------------------------------------------------
def col2im(cols, x_shape, kh, kw, stride=1, padding=0):
    """The adjoint of im2col: each tap's slice of the columns is ADDED back where it was read from."""
    n, c, h, wd = x_shape
    oh = (h + 2 * padding - kh) // stride + 1
    ow = (wd + 2 * padding - kw) // stride + 1
    cols = cols.reshape(n, c, kh, kw, oh, ow)
    dxp = np.zeros((n, c, h + 2 * padding, wd + 2 * padding))
    for u in range(kh):
        for v in range(kw):
            dxp[:, :, u:u + stride * oh:stride, v:v + stride * ow:stride] += cols[:, :, u, v]
    return dxp[:, :, padding:padding + h, padding:padding + wd]


def section3():
    header(3, "conv and pooling backward, derived and checked")
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 2, 5, 5))
    w = rng.standard_normal((3, 2, 3, 3))
    b = rng.standard_normal(3)
    stride, padding = 2, 1
    xt, wt, bt = (tinycnn.tensor(a, requires_grad=True) for a in (x, w, b))
    y = F.conv2d(xt, wt, bt, stride=stride, padding=padding)
    g = rng.standard_normal(y.shape)               # an upstream gradient dL/dy
    (y * tinycnn.tensor(g)).sum().backward()       # L = sum(y * g), so dL/dy = g

    # y[n] = W_mat @ cols[n] + b  =>  three GEMM-shaped rules
    o = w.shape[0]
    cols, _ = im2col(x, 3, 3, stride, padding)                 # (N, CkK, P)
    gm = g.reshape(2, o, -1)                                   # (N, O, P)
    db = gm.sum(axis=(0, 2))                                   # db = sum over samples and pixels
    dw = np.einsum("nop,nkp->ok", gm, cols).reshape(w.shape)   # dW = sum_n g[n] @ cols[n]^T
    dx = col2im(np.einsum("ok,nop->nkp", w.reshape(o, -1), gm), x.shape, 3, 3, stride, padding)
    check("conv db = sum_{n,i,j} g", bt.grad.numpy(), db)
    check("conv dW = sum_n g[n] cols[n]^T", wt.grad.numpy(), dw)
    check("conv dx = col2im(W^T g)", xt.grad.numpy(), dx)
    assert tinycnn.gradcheck(lambda x, w, b: F.conv2d(x, w, b, stride=stride, padding=padding),
                             [tinycnn.tensor(a, requires_grad=True) for a in (x, w, b)])
    print("  ok  gradcheck of conv2d (stride 2, padding 1) for x, W and b")

    # pooling: 2x2 windows, stride 2, on a 4x4 plane
    x = rng.standard_normal((1, 1, 4, 4))
    g = rng.standard_normal((1, 1, 2, 2))
    xt = tinycnn.tensor(x, requires_grad=True)
    (F.max_pool2d(xt, 2) * tinycnn.tensor(g)).sum().backward()
    # max: y = x[argmax], so the whole gradient goes to the winner of each window, zero elsewhere
    dx = np.zeros_like(x)
    for i in range(2):
        for j in range(2):
            win = x[0, 0, 2 * i:2 * i + 2, 2 * j:2 * j + 2]
            u, v = np.unravel_index(np.argmax(win), win.shape)
            dx[0, 0, 2 * i + u, 2 * j + v] = g[0, 0, i, j]
    show("max pool: x[0, 0] =", x[0, 0])
    show("g = dL/dy =", g[0, 0])
    show("dL/dx routes g to each window's maximum:", dx[0, 0])
    check("max pool dx = g at the argmax of each window", xt.grad.numpy(), dx)
    xt = tinycnn.tensor(x, requires_grad=True)
    (F.avg_pool2d(xt, 2) * tinycnn.tensor(g)).sum().backward()
    # average: y = (1/4) sum of the window, so each of the 4 inputs gets g / 4
    check("avg pool dx = g / (kH kW) spread over the window", xt.grad.numpy(),
          np.kron(g, np.ones((2, 2))) / 4)
    for pool in (F.max_pool2d, F.avg_pool2d):
        assert tinycnn.gradcheck(lambda x: pool(x, 2), tinycnn.tensor(x, requires_grad=True))
    print("  ok  gradcheck of max_pool2d and avg_pool2d")


# ----------------------------------------------------------------------------------------------------
# (4) Softmax + cross-entropy
# ----------------------------------------------------------------------------------------------------
def section4():
    header(4, "softmax + cross-entropy, and why the fused gradient is (p - y)")
    rng = np.random.default_rng(3)
    z = rng.standard_normal((4, 3)) * 3           # logits of 4 samples, 3 classes
    labels = np.array([0, 2, 1, 2])
    y = np.eye(3)[labels]                          # one-hot targets
    # stable: log p = z - logsumexp(z), with the max subtracted so exp never overflows
    m = z.max(axis=1, keepdims=True)
    logp = z - (m + np.log(np.exp(z - m).sum(axis=1, keepdims=True)))
    p = np.exp(logp)
    loss = -(y * logp).sum(axis=1).mean()
    zt = tinycnn.tensor(z, requires_grad=True)
    lt = F.cross_entropy(zt, labels)
    lt.backward()
    check("cross_entropy = mean(logsumexp(z) - z_y)", lt.item(), loss)
    check("softmax rows = exp(log_softmax)", F.softmax(tinycnn.tensor(z), dim=1).numpy(), p)
    # dL/dz_k = sum_j (-y_j / p_j) dp_j/dz_k, dp_j/dz_k = p_j (delta_jk - p_k)  =>  p_k - y_k
    check("dL/dz = (p - y) / N", zt.grad.numpy(), (p - y) / len(z))
    assert tinycnn.gradcheck(lambda z: F.cross_entropy(z, labels), tinycnn.tensor(z, requires_grad=True))
    print("  ok  gradcheck of cross_entropy")
    big = np.array([[1000.0, 0.0, -1000.0]])
    with np.errstate(all="ignore"):  # the naive way overflows: that is the point
        naive = np.log(np.exp(big) / np.exp(big).sum())
    stable = F.log_softmax(tinycnn.tensor(big), dim=1).numpy()
    print(f"  logits {big[0]}: naive log(softmax) = {naive[0]}, stable log_softmax = {stable[0]}")
    assert np.isnan(naive[0, 0]) and np.all(np.isneginf(naive[0, 1:]))    # [nan, -inf, -inf]
    check("stable log_softmax of [1000, 0, -1000]", stable, [[0.0, -1000.0, -2000.0]])


# ----------------------------------------------------------------------------------------------------
# (5) One Adam step by hand vs optim.Adam
# ----------------------------------------------------------------------------------------------------
def section5():
    header(5, "Adam by hand vs tinycnn.optim.Adam")
    rng = np.random.default_rng(4)
    target = rng.standard_normal(4)
    scale = np.array([1.0, 10.0, 0.1, 100.0])      # badly conditioned on purpose
    p0 = rng.standard_normal(4)
    lr, b1, b2, eps = 0.1, 0.9, 0.999, 1e-8
    param = nn.Parameter(tinycnn.tensor(p0.copy()))
    opt = optim.Adam([param], lr=lr, betas=(b1, b2), eps=eps)
    p, m, v = p0.copy(), np.zeros(4), np.zeros(4)
    for step in range(1, 4):
        opt.zero_grad()
        loss = ((param - tinycnn.tensor(target)) ** 2 * tinycnn.tensor(scale)).sum()
        loss.backward()
        opt.step()
        g = 2 * scale * (p - target)               # the same gradient, by hand
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat, v_hat = m / (1 - b1 ** step), v / (1 - b2 ** step)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
        if step == 1:
            # at t = 1, m_hat = g and v_hat = g^2: every coordinate moves by lr, whatever its scale
            check("step 1 moves each coordinate by lr * sign(g)", p - p0, -lr * np.sign(g), rtol=1e-6, atol=0)
        print(f"  step {step}: p = {np.array2string(p, precision=5)}")
        check(f"step {step}: by hand == optim.Adam", param.numpy(), p)


# ----------------------------------------------------------------------------------------------------
# (6) Training a small CNN on PneumoniaMNIST and reading its metrics
# ----------------------------------------------------------------------------------------------------
def small_cnn():
    """conv(1->8) ReLU pool, conv(8->16) ReLU pool, linear(16*7*7 -> 2): 28x28 in, 2 logits out."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),     # 8 x 14 x 14
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),    # 16 x 7 x 7
        nn.Flatten(), nn.Linear(16 * 7 * 7, 2))


def load_data(data_dir, fast):
    from tinycnn import data

    try:
        ds = data.load_dataset("pneumoniamnist", data_dir=data_dir, download=False)
        name = "PneumoniaMNIST"
    except data.DatasetError as e:
        print(f"  PneumoniaMNIST not found ({e}); using the built-in synthetic dataset instead")
        ds = data.load_dataset("synthetic")
        name = "synthetic"
    train, test = ds.train, ds.test
    if fast:
        rng = np.random.default_rng(0)
        train = train.subset(rng.choice(len(train), 512, replace=False))
        test = test.subset(rng.choice(len(test), 300, replace=False))
    return name, train, test


def predict_probs(model, images, batch=256):
    model.eval()
    out = []
    with tinycnn.no_grad():
        for i in range(0, len(images), batch):
            out.append(F.softmax(model(tinycnn.tensor(images[i:i + batch])), dim=1).numpy())
    return np.concatenate(out)


def section6(data_dir, fast, epochs, seed):
    header(6, "training a small CNN on PneumoniaMNIST and reading its metrics")
    from tinycnn import metrics

    name, train, test = load_data(data_dir, fast)
    mean, std = float(train.images.mean()), float(train.images.std())
    xtr, ytr = (train.images - mean) / std, train.labels
    xte, yte = (test.images - mean) / std, test.labels
    print(f"  {name}: train {xtr.shape}, test {xte.shape}, class counts train {np.bincount(ytr).tolist()}")
    if name == "PneumoniaMNIST":
        assert 0.7 < ytr.mean() < 0.8, "about three quarters of the training images are pneumonia"
    tinycnn.manual_seed(seed)
    model = small_cnn()
    print(f"  model: {sum(p.numpy().size for p in model.parameters())} parameters")
    opt = optim.Adam(model.parameters(), lr=2e-3)
    order_rng = np.random.default_rng(seed)
    batch = 32 if fast else 64
    losses, t0 = [], time.perf_counter()
    for epoch in range(epochs):
        model.train()
        order = order_rng.permutation(len(xtr))
        for i in range(0, len(order), batch):
            idx = order[i:i + batch]
            loss = F.cross_entropy(model(tinycnn.tensor(xtr[idx])), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        print(f"  epoch {epoch + 1}: mean train loss {np.mean(losses[-(len(order) // batch):]):.4f} "
              f"({time.perf_counter() - t0:.1f} s)")
    probs = predict_probs(model, xte)
    rep = metrics.classification_report(yte, probs)
    for k in ("auc", "acc", "precision", "sensitivity", "specificity", "f1"):
        print(f"  {k:<12} {rep[k]:.4f}")
    (tn, fp), (fn, tp) = rep["confusion_matrix"]
    print(f"  confusion matrix (rows true normal/pneumonia, cols predicted): {rep['confusion_matrix']}")
    # what the numbers mean, read off the confusion matrix
    check("acc = (TP + TN) / n", rep["acc"], (tp + tn) / rep["n"])
    check("sensitivity = TP / (TP + FN): pneumonia cases found", rep["sensitivity"], tp / (tp + fn))
    check("specificity = TN / (TN + FP): normal cases cleared", rep["specificity"], tn / (tn + fp))
    # AUC = the chance that a random positive scores above a random negative (ties count 1/2)
    s, pos = probs[:, 1], yte == 1
    diff = s[pos][:, None] - s[~pos][None, :]
    check("AUC = P(score of a positive > score of a negative)", rep["auc"],
          (diff > 0).mean() + 0.5 * (diff == 0).mean())
    assert rep["auc"] > 0.5, f"the trained model should beat chance, got AUC {rep['auc']:.3f}"
    return {"model": model, "x": xte, "y": yte, "probs": probs, "losses": losses, "dataset": name}


# ----------------------------------------------------------------------------------------------------
# (7) Grad-CAM
# ----------------------------------------------------------------------------------------------------
def section7(run, out=None):
    header(7, "Grad-CAM: where the network looked")
    from tinycnn import explain

    model, xte, yte, probs = run["model"], run["x"], run["y"], run["probs"]
    layer = model[3]                                # the last conv
    x = xte[:4]
    cams, targets = explain.grad_cam(model, x, layer=layer, upsample=False, normalize=False)
    # by hand: keep the layer's output A with a forward hook, backprop the class score into it
    store = {}

    def hook(module, inputs, output):
        output.retain_grad()
        store["A"] = output

    handle = layer.register_forward_hook(hook)
    model.eval()
    xt = tinycnn.tensor(x, requires_grad=True)
    logits = model(xt)
    onehot = np.eye(2, dtype=np.float32)[targets]
    (logits * tinycnn.tensor(onehot)).sum().backward()
    handle.remove()
    A, dA = store["A"].numpy().astype(np.float64), store["A"].grad.numpy().astype(np.float64)
    alpha = dA.mean(axis=(2, 3))                    # alpha_k = mean_ij dy_c / dA_k[i, j]
    cam = np.maximum(np.einsum("nk,nkhw->nhw", alpha, A), 0)
    check("grad_cam == ReLU(sum_k alpha_k A_k)", cams, cam, rtol=1e-5, atol=1e-6)
    check("targets are the predicted classes", targets, probs[:4].argmax(axis=1))
    show(f"CAM of image 0 / its max ({cams.shape[1]}x{cams.shape[2]}; grad_cam upsamples it to 28x28 by default):",
         cams[0] / max(cams[0].max(), 1e-12), precision=1)
    maps = viz.feature_maps(model, x[0], "0")
    print(f"  feature maps of the first conv for image 0: {maps.shape}, "
          f"fraction < 0 (set to 0 by the ReLU next): {(maps < 0).mean():.2f}")
    if out is not None:
        out = Path(out)
        full, _ = explain.grad_cam(model, x, layer=layer)
        names = ["normal", "pneumonia"]
        titles = [f"true {names[a]} / pred {names[b]}" for a, b in zip(yte[:4], targets)]
        explain.save_overlays(x, full, out / "gradcam.png", titles=titles)
        viz.feature_maps(model, x[0], "1", path=out / "feature_maps_conv1.png", scale=4)
        viz.feature_maps(model, x[0], "4", path=out / "feature_maps_conv2.png", scale=6)
        viz.filters(model[0], path=out / "filters_conv1.png", scale=16)
        print(f"  pictures written to {out}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fast", action="store_true", default=os.environ.get("TINYCNN_TUTORIAL_FAST") == "1",
                   help="small subset, 1 epoch (also TINYCNN_TUTORIAL_FAST=1)")
    p.add_argument("--data-dir",
                   default=os.environ.get("TINYCNN_DATA_DIR") or str(REPO.parent / "shared" / "data"),
                   help="folder with pneumoniamnist.npz (default: $TINYCNN_DATA_DIR, else ../shared/data)")
    p.add_argument("--epochs", type=int, default=None, help="default: 1 with --fast, else 3")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="also write the pictures to this folder")
    args = p.parse_args(argv)
    epochs = args.epochs or (1 if args.fast else 3)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
    t0 = time.perf_counter()
    section1()
    section2(args.out)
    section3()
    section4()
    section5()
    trained = section6(args.data_dir, args.fast, epochs, args.seed)
    section7(trained, out=args.out)
    print(f"\nall checks passed in {time.perf_counter() - t0:.1f} s")
    return trained


if __name__ == "__main__":
    main()
