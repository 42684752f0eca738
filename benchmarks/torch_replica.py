"""Does tinycnn train the recipe's network as well as PyTorch does? A validation-only diagnostic.

    python benchmarks/torch_replica.py --dataset breastmnist --seeds 0,1,2 [--epochs N] [--out DIR]

For each seed it trains the default recipe's single VGG (no ensemble, no weight averaging) three ways, on
the very same mini-batches (tinycnn's DataLoader and augmentation, same order) with the same learning
rate at every step (the recipe's warm-up + cosine schedule), the same loss (class weights, label
smoothing) and AdamW settings:

- `tinycnn`: `tinycnn train ... --ensemble 1 --ema 0` in-process (its own dropout randomness);
- `torch_same_init`: a PyTorch copy of the network starting from tinycnn's initial weights;
- `torch_default_init`: the same with PyTorch's default initialisation.

It prints validation AUC and loss (mean over the second half of training, and the last 10 epochs) per
variant and seed, and writes them to OUT/torch_replica.json. Test data are never evaluated: the point is to
separate the engine (same batches, same math) from the recipe, not to tune anything on test.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "examples"))


def torch_vgg(in_channels, num_classes):
    """PyTorch twin of tinycnn.models.SmallVGG with the same state_dict names, built from its layer plan."""
    import torch.nn as tnn

    from tinycnn.models.vgg import _PLAN

    class VGG(tnn.Module):
        def __init__(self):
            super().__init__()
            layers, c = [], in_channels
            for v in _PLAN:
                if v == "M":
                    layers.append(tnn.MaxPool2d(2))
                else:
                    layers += [tnn.Conv2d(c, v, 3, padding=1, bias=False), tnn.BatchNorm2d(v), tnn.ReLU()]
                    c = v
            self.features = tnn.Sequential(*layers)
            self.pool = tnn.AdaptiveAvgPool2d(1)
            self.classifier = tnn.Sequential(tnn.Dropout(0.3), tnn.Linear(c, num_classes))

        def forward(self, x):
            return self.classifier(self.pool(self.features(x)).flatten(1))
    return VGG()


def val_metrics(labels, probs):
    from sklearn.metrics import roc_auc_score
    y = np.asarray(labels).ravel().astype(np.int64)
    auc = roc_auc_score(y, probs[:, 1]) if probs.shape[1] == 2 else roc_auc_score(y, probs, multi_class="ovr")
    return float(auc), float(-np.log(np.clip(probs[np.arange(len(y)), y], 1e-300, None)).mean())


def run_torch(seed, dataset, data_dir, epochs, same_init, threads):
    import torch

    import tinycnn
    from tinycnn.data import DataLoader
    from tinycnn.data import transforms as T
    from tinycnn.models import get_model
    from tinycnn.models.ensemble import member_seed
    from tinycnn.training.run import TRAIN_DEFAULTS, _class_weights, load_data, resolve_settings
    from tinycnn.training.schedules import WarmupCosine

    torch.set_num_threads(threads)
    user = {"dataset": dataset, "data_dir": data_dir, "seed": seed, "ensemble": 1, "ema": 0.0, "epochs": epochs}
    tinycnn.manual_seed(seed)                       # the order of train_run: seed, data, model
    ds = load_data({**TRAIN_DEFAULTS, **user}, progress=False)
    s = resolve_settings({**user, "epochs_given": True}, ds)
    mean = ds.train.images.mean(axis=(0, 2, 3)).tolist()
    std = np.maximum(ds.train.images.std(axis=(0, 2, 3)), 1e-6).tolist()
    ours = get_model("vgg", in_channels=ds.info.n_channels, num_classes=ds.info.n_classes)
    model = torch_vgg(ds.info.n_channels, ds.info.n_classes)
    if same_init:
        model.load_state_dict({k: torch.tensor(v) for k, v in ours.state_dict().items()})
    torch.manual_seed(seed)
    w = _class_weights(s, ds)
    weight = None if w is None else torch.tensor(w, dtype=torch.float32)
    loader = DataLoader(ds.train, batch_size=s["batch_size"], shuffle=True, seed=member_seed(seed, 0),
                        transform=T.Compose([T.parse_augment(s["augment"]), T.Normalize(mean, std)]),
                        drop_last=len(ds.train) > s["batch_size"])
    # the recipe's per-step learning rates, read off tinycnn's schedule on a stand-in optimizer
    stand_in = tinycnn.optim.AdamW([tinycnn.tensor(np.zeros(1, np.float32), requires_grad=True)], lr=s["lr"])
    sched = WarmupCosine(stand_in, len(loader) * s["epochs"], len(loader) * s["warmup_epochs"])
    opt = torch.optim.AdamW(model.parameters(), lr=s["lr"], weight_decay=s["weight_decay"])
    xv = torch.tensor(T.Normalize(mean, std)(np.ascontiguousarray(ds.val.images, dtype=np.float32)))
    rows = []
    for e in range(s["epochs"]):
        model.train()
        for xb, yb in loader.iter_epoch(e):
            sched.apply()
            for g in opt.param_groups:
                g["lr"] = stand_in.param_groups[0]["lr"]
            loss = torch.nn.functional.cross_entropy(model(torch.tensor(xb)), torch.tensor(np.asarray(yb, np.int64)),
                                                     weight=weight, label_smoothing=s["label_smoothing"])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        with torch.no_grad():
            probs = torch.softmax(model(xv).double(), 1).numpy()
        auc, nll = val_metrics(ds.val.labels, probs)
        rows.append({"epoch": e + 1, "val_auc": auc, "val_loss": nll})
    return rows


def run_tinycnn(seed, dataset, data_dir, epochs, out):
    from tinycnn.training import train_run
    run_dir = os.path.join(out, f"tinycnn-seed{seed}")
    train_run({"dataset": dataset, "data_dir": data_dir, "seed": seed, "ensemble": 1, "ema": 0.0,
               "epochs": epochs, "out": run_dir}, log=None, quiet=True)
    with open(os.path.join(run_dir, "history.csv")) as f:
        return [{"epoch": int(r["epoch"]), "val_auc": float(r["val_auc"]), "val_loss": float(r["val_loss"])}
                for r in csv.DictReader(f)]


def summarise(rows):
    half = rows[len(rows) // 2:]
    return {"val_auc_2nd_half": float(np.mean([r["val_auc"] for r in half])),
            "val_loss_2nd_half": float(np.mean([r["val_loss"] for r in half])),
            "val_auc_last10": float(np.mean([r["val_auc"] for r in rows[-10:]]))}


def main(argv=None):
    from _common import default_data_dir

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="breastmnist")
    p.add_argument("--data-dir", default=default_data_dir())
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, default=None, help="default: the recipe's")
    p.add_argument("--threads", type=int, default=2, help="PyTorch threads")
    p.add_argument("--out", default=None, help="folder for the tinycnn runs and torch_replica.json (default: a temp dir)")
    args = p.parse_args(argv)
    out = args.out or tempfile.mkdtemp(prefix="torch_replica-")
    os.makedirs(out, exist_ok=True)
    if args.epochs is None:
        from tinycnn.training.run import TRAIN_DEFAULTS, load_data, resolve_settings
        ds = load_data({**TRAIN_DEFAULTS, "dataset": args.dataset, "data_dir": args.data_dir}, progress=False)
        args.epochs = resolve_settings({"dataset": args.dataset}, ds)["epochs"]
    result = {"dataset": args.dataset, "epochs": args.epochs, "runs": {}}
    print(f"{'variant':20s} seed  val AUC (2nd half)  val loss (2nd half)  val AUC (last 10)")
    for seed in [int(s) for s in args.seeds.split(",")]:
        variants = {"tinycnn": lambda: run_tinycnn(seed, args.dataset, args.data_dir, args.epochs, out),
                    "torch_same_init": lambda: run_torch(seed, args.dataset, args.data_dir, args.epochs, True, args.threads),
                    "torch_default_init": lambda: run_torch(seed, args.dataset, args.data_dir, args.epochs, False,
                                                            args.threads)}
        for name, fn in variants.items():
            rows = fn()
            summ = summarise(rows)
            result["runs"].setdefault(name, []).append({"seed": seed, "history": rows, **summ})
            print(f"{name:20s} {seed:4d}  {summ['val_auc_2nd_half']:18.4f}  {summ['val_loss_2nd_half']:19.4f}  "
                  f"{summ['val_auc_last10']:17.4f}", flush=True)
    for name, runs in result["runs"].items():
        print(f"{name:20s} mean  {np.mean([r['val_auc_2nd_half'] for r in runs]):18.4f}  "
              f"{np.mean([r['val_loss_2nd_half'] for r in runs]):19.4f}  {np.mean([r['val_auc_last10'] for r in runs]):17.4f}")
    with open(os.path.join(out, "torch_replica.json"), "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {os.path.join(out, 'torch_replica.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
