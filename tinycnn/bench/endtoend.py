"""End-to-end benchmarks: whole-model training and inference steps, and a real epoch.

Every implementation starts from the same weights (one seeded tinycnn model's state_dict, loaded
into each tinycnn copy and into the PyTorch twin by name). Before any timing, one forward in eval
mode and one forward + backward in train mode are compared with PyTorch (logits, loss and every
parameter gradient); an implementation that disagrees is reported "wrong" and not timed.

Implementations: tinycnn with each CPU kernel family ("numpy", "numba"), PyTorch in its default
contiguous layout ("torch") and in channels_last ("torch_cl"); on a GPU also tinycnn with each GPU
family ("cupy", "numba_cuda") and PyTorch on CUDA ("torch_cuda").
A training step is: zero_grad, forward, cross-entropy (mean), backward, Adam step.
"""
from __future__ import annotations

import os
import time
import traceback
from pathlib import Path

import numpy as np

from .. import backends
from .runner import check_outputs
from .opcases import Case
from .timing import interleaved, summarize

__all__ = ["model_cases", "run_model_case", "epoch_throughput", "find_data_file", "reference_weights"]


def find_data_file(name: str = "pneumoniamnist", data_dir: str | None = None) -> Path | None:
    """`<name>.npz` from data_dir, $TINYCNN_DATA_DIR, /work/shared/data or ../shared/data; None if absent."""
    dirs = [data_dir, os.environ.get("TINYCNN_DATA_DIR"), "/work/shared/data",
            str(Path.cwd().parent / "shared" / "data")]
    for d in dirs:
        if d and (Path(d) / f"{name}.npz").is_file():
            return Path(d) / f"{name}.npz"
    return None


def reference_weights(name: str, in_channels: int, num_classes: int, input_size: int, seed: int = 0) -> dict:
    """The shared starting weights: a seeded tinycnn model's state_dict (name -> NumPy array)."""
    import tinycnn  # noqa: PLC0415
    tinycnn.manual_seed(seed)
    return {k: np.array(v, copy=True) for k, v in _tiny_model(name, in_channels, num_classes, input_size)
            .state_dict().items()}


def _tiny_model(name, in_channels, num_classes, input_size):
    from .. import models  # noqa: PLC0415
    kw = {"input_size": input_size} if name == "simplecnn" else {}
    if name != "simplecnn" and input_size != 28:
        pass  # ResNet-18 ends in global average pooling: any size works
    return models.get_model(name, in_channels, num_classes, **kw)


# ----------------------------------------------------------------------------- runners
class _TinyRunner:
    def __init__(self, name, weights, x, y, family=None, device="cpu", gpu_family=None, input_size=28, lr=1e-3):
        import tinycnn  # noqa: PLC0415
        self.tc, self.family, self.gpu_family, self.device = tinycnn, family, gpu_family, device
        self.model = _tiny_model(name, x.shape[1], _classes(weights), input_size)
        self.model.load_state_dict(weights)
        if device != "cpu":
            self.model.to(device)
        self.x = tinycnn.Tensor(x, device=device)
        self.y = y if device == "cpu" else backends.to_device(y, device)
        self.lr, self.opt = lr, None
        self.F = tinycnn.nn.functional

    def make_optimizer(self):
        """Built apart from the model so inference can be timed even where the optimizer is missing."""
        if self.opt is None:
            self.opt = self.tc.optim.Adam(self.model.parameters(), lr=self.lr)

    def _select(self):
        if self.family is not None:
            backends.set_cpu_kernels(self.family)
        if self.gpu_family is not None:
            backends.set_gpu_kernels(self.gpu_family)

    def logits_eval(self):
        self._select()
        self.model.eval()
        with self.tc.no_grad():
            out = self.model(self.x)
        self.model.train()
        return out.numpy()

    def grads(self):
        self._select()
        self.model.train()
        self.model.zero_grad()
        loss = self.F.cross_entropy(self.model(self.x), self.y)
        loss.backward()
        return (loss.numpy(),) + tuple(p.grad.numpy() for _, p in self.model.named_parameters())

    def train_step(self):
        self._select()
        self.opt.zero_grad()
        loss = self.F.cross_entropy(self.model(self.x), self.y)
        loss.backward()
        self.opt.step()
        return loss

    def infer_step(self):
        self._select()
        with self.tc.no_grad():
            return self.model(self.x)

    def set_mode(self, mode):
        self.model.train(mode == "train")

    def fit_batch(self, xb, yb):
        # host batches go to the model's device here, as a user's training loop would do it
        self._select()
        if self.device != "cpu":
            xb, yb = backends.to_device(xb, self.device), backends.to_device(yb, self.device)
        self.opt.zero_grad()
        loss = self.F.cross_entropy(self.model(self.tc.Tensor._wrap(xb)), yb)
        loss.backward()
        self.opt.step()


def _classes(weights):
    last = [v for k, v in weights.items() if k.endswith("weight")][-1]
    return int(last.shape[0])


class _TorchRunner:
    def __init__(self, name, weights, x, y, channels_last=False, device="cpu", input_size=28, lr=1e-3):
        import torch  # noqa: PLC0415
        from .torch_models import build_torch_model, load_tinycnn_weights  # noqa: PLC0415
        self.torch = torch
        self.cl = channels_last
        self.device = device
        self.model = build_torch_model(name, x.shape[1], _classes(weights), input_size)
        load_tinycnn_weights(self.model, weights)
        self.model.to(device)
        self.x = torch.from_numpy(x).to(device)
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
            self.x = self.x.contiguous(memory_format=torch.channels_last)
        self.y = torch.from_numpy(y.astype(np.int64)).to(device)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=lr)
        self.F = torch.nn.functional

    def make_optimizer(self):
        pass

    def logits_eval(self):
        self.model.eval()
        with self.torch.no_grad():
            out = self.model(self.x)
        self.model.train()
        return out.cpu().numpy()

    def grads(self):
        self.model.train()
        self.opt.zero_grad()
        loss = self.F.cross_entropy(self.model(self.x), self.y)
        loss.backward()
        return (loss.detach().cpu().numpy(),) + tuple(p.grad.cpu().numpy() for _, p in self.model.named_parameters())

    def train_step(self):
        self.opt.zero_grad()
        loss = self.F.cross_entropy(self.model(self.x), self.y)
        loss.backward()
        self.opt.step()
        return loss

    def infer_step(self):
        with self.torch.no_grad():
            return self.model(self.x)

    def set_mode(self, mode):
        self.model.train(mode == "train")

    def fit_batch(self, xb, yb):
        xb = self.torch.from_numpy(xb).to(self.device)
        if self.cl:
            xb = xb.contiguous(memory_format=self.torch.channels_last)
        self.opt.zero_grad()
        loss = self.F.cross_entropy(self.model(xb), self.torch.from_numpy(yb).to(self.device))
        loss.backward()
        self.opt.step()


def _runner_specs(torch, gpu: bool, families=("numpy", "numba")) -> dict:
    """impl name -> (kind, options) for every implementation available here."""
    specs = {f: ("tiny", {"family": f}) for f in families}
    if gpu:
        specs["cupy"] = ("tiny", {"device": "cuda", "gpu_family": "cupy"})
        specs["numba_cuda"] = ("tiny", {"device": "cuda", "gpu_family": "numba"})
    if torch is not None:
        specs["torch"] = ("torch", {})
        specs["torch_cl"] = ("torch", {"channels_last": True})
        if gpu and torch.cuda.is_available():
            specs["torch_cuda"] = ("torch", {"device": "cuda"})
    return specs


def _sync_for(name, torch):
    if name in ("cupy", "numba_cuda"):
        import cupy as cp  # noqa: PLC0415
        return cp.cuda.Device().synchronize
    if name == "torch_cuda":
        return torch.cuda.synchronize
    return None


def _build(name, spec, model, weights, x, y, input_size):
    kind, opts = spec
    if kind == "tiny":
        return _TinyRunner(model, weights, x, y, input_size=input_size, **opts)
    return _TorchRunner(model, weights, x, y, input_size=input_size, **opts)


# ----------------------------------------------------------------------------- step benchmarks
def model_cases(quick: bool) -> list[dict]:
    """(model, batch, input size, timing) points of the end-to-end step benchmark."""
    if quick:
        return [dict(model="simplecnn", batch=128, input_size=28, reps=5),
                dict(model="resnet18", batch=8, input_size=28, reps=3, peers=("torch",))]
    return [dict(model="simplecnn", batch=128, input_size=28, reps=15),
            dict(model="simplecnn", batch=1, input_size=28, reps=15),
            dict(model="resnet18", batch=128, input_size=28, reps=3, default_family_only=True)]


_MODEL_TOL = Case("model", "e2e", "", {}, None, None, None, None, rtol=2e-3, atol_scale=2e-3)


def run_model_case(point: dict, *, torch=None, gpu: bool = False, seed: int = 0, families=("numpy", "numba"),
                   modes=("train", "infer"), budget_s: float | None = None) -> list[dict]:
    """Check, then time the train and inference steps of one model at one batch size."""
    name, batch, size = point["model"], point["batch"], point["input_size"]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, 1, size, size)).astype(np.float32)
    y = rng.integers(0, 2, batch).astype(np.int64)
    base = {"model": name, "batch": batch, "input_size": size}
    try:
        weights = reference_weights(name, 1, 2, size, seed)
    except Exception as exc:  # noqa: BLE001 - model not written yet, or broken: a result
        return [dict(base, mode=m, impls={}, note=f"model unavailable: {type(exc).__name__}: {exc}") for m in modes]
    runners, status = {}, {}
    if point.get("default_family_only"):   # big models: the NumPy reference family would dominate the run
        families = (backends.get_cpu_kernels(),)
    specs = _runner_specs(torch, gpu, families)
    if point.get("peers") is not None:   # the quick suite skips the channels_last peer of big models
        specs = {k: v for k, v in specs.items() if v[0] == "tiny" or k in point["peers"] or k == "torch_cuda"}
    for impl, spec in specs.items():
        try:
            runners[impl] = _build(impl, spec, name, weights, x, y, size)
            status[impl] = {"status": "ok"}
        except Exception as exc:  # noqa: BLE001
            status[impl] = {"status": "unavailable" if isinstance(exc, (AttributeError, ImportError)) else "error",
                            "message": f"{type(exc).__name__}: {exc}"}
    ref = "torch" if "torch" in runners else ("numpy" if "numpy" in runners else None)
    # correctness first: eval logits, then train-mode loss and every gradient
    outs = {}
    for impl, r in list(runners.items()):
        try:
            # these are also the first calls of this model in the process: their times are the
            # cold-start cost (Numba compile or cache load, lazy buffers)
            t0 = time.perf_counter()
            logits = r.logits_eval()
            t1 = time.perf_counter()
            grads = r.grads()
            t2 = time.perf_counter()
            outs[impl] = ((logits,), grads)
            status[impl].update(cold_infer_s=t1 - t0, cold_fwd_bwd_s=t2 - t1)
        except Exception as exc:  # noqa: BLE001
            status[impl] = {"status": "error", "message": f"{type(exc).__name__}: {exc}",
                            "traceback": traceback.format_exc(limit=4)}
            runners.pop(impl)
    if ref not in outs:
        ref = None
    for impl in list(runners):
        if impl == ref or ref is None:
            continue
        for what, j in (("eval logits", 0), ("train loss and gradients", 1)):
            ok, msg, err = check_outputs(outs[impl][j], outs[ref][j], _MODEL_TOL)
            status[impl].setdefault("max_rel_err", 0.0)
            status[impl]["max_rel_err"] = max(status[impl]["max_rel_err"], err)
            if not ok:
                status[impl].update(status="wrong", message=f"{what}: {msg}")
                runners.pop(impl)
                break
    records = []
    for mode in modes:
        rec = dict(base, mode=mode, reference=ref, impls={k: dict(v) for k, v in status.items()})
        if ref is None or not any(k in runners for k in ("numpy", "numba", "cupy", "numba_cuda")):
            rec["note"] = "no tinycnn implementation could run" if ref else "no reference output"
            records.append(rec)
            continue
        fns = {}
        for k, r in runners.items():
            try:
                if mode == "train":
                    r.make_optimizer()
                r.set_mode(mode)
                fns[k] = r.train_step if mode == "train" else r.infer_step
            except (AttributeError, ImportError) as exc:
                rec["impls"][k].update(status="unavailable", message=f"{type(exc).__name__}: {exc}")
        if not any(k in fns for k in ("numpy", "numba", "cupy", "numba_cuda")):
            rec["note"] = "no tinycnn implementation could run"
            records.append(rec)
            continue
        res = interleaved(fns, reps=point["reps"], warmup=1, min_sample_s=0.0, max_number=1, budget_s=budget_s,
                          syncs={k: s for k in fns if (s := _sync_for(k, torch)) is not None})
        peer = res.get("torch", {}).get("median")
        gpu_peer = res.get("torch_cuda", {}).get("median")
        for k, t in res.items():
            rec["impls"][k].update(t)
            rec["impls"][k]["images_per_s"] = batch / t["median"]
            if peer:
                rec["impls"][k]["ratio_vs_torch"] = t["median"] / peer
            if gpu_peer and k in ("cupy", "numba_cuda"):
                rec["impls"][k]["ratio_vs_torch_cuda"] = t["median"] / gpu_peer
        records.append(rec)
    return records


# ----------------------------------------------------------------------------- a real epoch
def epoch_throughput(*, quick: bool, torch=None, gpu: bool = False, data_dir: str | None = None,
                     model: str = "simplecnn", batch: int = 128, seed: int = 0) -> dict:
    """Images/second of training epochs on PneumoniaMNIST's train split, interleaved by epoch.

    Each rep trains one epoch (quick: the first 512 images) with every implementation in turn,
    rotating the order; the data (uint8 -> float32 in [0, 1], shuffled with a fixed seed) is the
    same for all. The first epoch of each implementation is reported apart as the cold epoch.
    """
    path = find_data_file("pneumoniamnist", data_dir)
    if path is None:
        return {"note": "pneumoniamnist.npz not found (set TINYCNN_DATA_DIR or --data-dir); epoch benchmark skipped"}
    with np.load(path) as z:
        images, labels = z["train_images"], z["train_labels"].ravel().astype(np.int64)
    n = min(len(images), 512) if quick else len(images)
    order = np.random.default_rng(seed).permutation(len(images))[:n]
    xs = (images[order].astype(np.float32) / np.float32(255.0))[:, None]
    ys = labels[order]
    weights = reference_weights(model, 1, 2, 28, seed)
    specs = _runner_specs(torch, gpu, families=(backends.get_cpu_kernels(),))
    if quick:
        specs = {k: v for k, v in specs.items() if k in (backends.get_cpu_kernels(), "torch", "cupy", "torch_cuda")}
    runners, out = {}, {"model": model, "batch": batch, "images": int(n), "file": str(path),
                        "partial": bool(n < len(images)), "impls": {}}
    for impl, spec in specs.items():
        try:
            run = _build(impl, spec, model, weights, xs[:batch], ys[:batch], 28)
            run.make_optimizer()
            runners[impl] = run
            out["impls"][impl] = {"status": "ok", "epoch_s": []}
        except Exception as exc:  # noqa: BLE001
            out["impls"][impl] = {"status": "unavailable", "message": f"{type(exc).__name__}: {exc}"}
    reps = 1 if quick else 2
    names = list(runners)
    for r in range(reps + 1):   # rep 0 is the cold epoch
        for name in names[r % max(1, len(names)):] + names[:r % max(1, len(names))]:
            run = runners[name]
            sync = _sync_for(name, torch)
            t0 = time.perf_counter()
            try:
                for i in range(0, n, batch):
                    run.fit_batch(xs[i:i + batch], ys[i:i + batch])
                if sync:
                    sync()
            except Exception as exc:  # noqa: BLE001
                out["impls"][name].update(status="error", message=f"{type(exc).__name__}: {exc}")
                names.remove(name)
                continue
            dt = time.perf_counter() - t0
            if r == 0:
                out["impls"][name]["cold_epoch_s"] = dt
            else:
                out["impls"][name]["epoch_s"].append(dt)
    for name in names:
        rec = out["impls"][name]
        rec.update(summarize(rec["epoch_s"]))
        if rec.get("median"):
            rec["images_per_s"] = n / rec["median"]
    peer = out["impls"].get("torch", {}).get("images_per_s")
    for rec in out["impls"].values():
        if peer and rec.get("images_per_s"):
            rec["speed_vs_torch"] = rec["images_per_s"] / peer
    return out
