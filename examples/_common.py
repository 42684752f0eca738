"""Shared bits of the example scripts: argument parsing, data location, Grad-CAM figure, printing metrics."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing


def default_data_dir() -> str:
    """$TINYCNN_DATA_DIR, else ../shared/data beside the repository."""
    return os.environ.get("TINYCNN_DATA_DIR") or str(REPO.parent / "shared" / "data")


def parser(description: str, out: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--data-dir", default=default_data_dir(), help="folder with the MedMNIST .npz files")
    p.add_argument("--epochs", type=int, default=None, help="default: the recipe's number of epochs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=out, help="run directory")
    p.add_argument("--quiet", action="store_true")
    return p


def gradcam_figure(run_dir, dataset: str, data_dir: str, n: int = 8) -> str:
    """Grad-CAM overlays of the first `n` test images with the best checkpoint -> run_dir/gradcam.png."""
    from tinycnn import data, explain
    from tinycnn.data import transforms as T
    from tinycnn.training import build_model
    from tinycnn.training.run import predict_probs

    model, meta = build_model(Path(run_dir) / "best.safetensors")
    ds = data.load_dataset(dataset, data_dir=data_dir)
    x, y = ds.test.images[:n], ds.test.labels[:n]
    probs = predict_probs(model, meta, x)
    cams, t = explain.grad_cam(model, T.Normalize(meta["mean"], meta["std"])(x))
    names = meta["class_names"]
    titles = [f"true {names[a]} / pred {names[b]} {probs[i, b]:.2f}" for i, (a, b) in enumerate(zip(y, t))]
    return explain.save_overlays(x, cams, Path(run_dir) / "gradcam.png", titles=titles)


def print_metrics(title: str, m: dict) -> None:
    print(f"\n{title}")
    for k in ("auc", "acc", "precision", "recall", "f1", "sensitivity", "specificity"):
        print(f"  {k:<12} {m[k]:.4f}")
    print(f"  confusion    {m['confusion_matrix']}  (rows true, cols predicted; n={m['n']})")
