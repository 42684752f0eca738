"""Measure the default recipes: `tinycnn train --dataset NAME --seed S` for several seeds, as a table.

    python examples/accuracy.py [--datasets pneumoniamnist,breastmnist] [--seeds 0,1,2] [--out runs/accuracy]
                                [--markdown docs/results.md] [--conditions "what else ran on the machine"]

Each run is a separate `tinycnn train` process with default settings (what a user gets), one after the
other, timed from process start to end (data loading, training, test evaluation, plots); the time is
stored as `wall.json` in the run directory. `--reuse` summarises runs already in --out (their
metrics.json, history.csv, config.json and wall.json) instead of training again. Prints, and with
--markdown writes, test AUC / ACC mean +- std over the seeds with the MedMNIST v2 baselines beside them,
then one row per run (AUC, ACC, ensemble members, EMA, test-time flips, epochs trained, best epoch,
wall time).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import time

import numpy as np
from _common import REPO, default_data_dir

# MedMNIST v2 paper (Yang et al. 2023), ResNet-18 (28x28) test AUC / ACC, and Google AutoML Vision
BASELINES = {"pneumoniamnist": {"resnet18_28": (0.944, 0.854), "automl": (0.991, 0.946)},
             "breastmnist": {"resnet18_28": (0.901, 0.863), "automl": (0.919, 0.861)}}
LIMIT_S = 15 * 60


def _code_version() -> str:
    """' (code of commit <hash>)' for a git checkout, else ''."""
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    return f" (code of commit {git.stdout.strip()})" if git.returncode == 0 else ""


def run_once(name, seed, out, data_dir, conditions):
    """Train one run in a fresh process; returns its whole-process wall time (also saved as wall.json)."""
    cmd = [sys.executable, "-m", "tinycnn", "train", "--dataset", name, "--seed", str(seed),
           "--data-dir", data_dir, "--out", out, "--quiet"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=REPO)
    wall = time.perf_counter() - t0
    with open(os.path.join(out, "wall.json"), "w") as f:
        json.dump({"wall_seconds": wall, "command": " ".join(cmd[1:]) + _code_version(), "conditions": conditions,
                   "cpu": _cpu()}, f)
    return wall


def _cpu() -> str:
    """'AMD EPYC (AVX2), 2 cores': the model name alone hides the vector width, which moves speed 1.5-2x."""
    from tinycnn.bench.machine import cpu_label   # noqa: PLC0415
    return f"{cpu_label()}, {len(os.sched_getaffinity(0))} cores"


def read_run(out):
    """What the table shows about one finished run directory."""
    m = json.load(open(os.path.join(out, "metrics.json")))
    cfg = json.load(open(os.path.join(out, "config.json")))
    with open(os.path.join(out, "history.csv")) as f:
        epochs = sum(1 for _ in csv.DictReader(f))
    wall_file = os.path.join(out, "wall.json")
    timing = json.load(open(wall_file)) if os.path.exists(wall_file) else {}
    code = re.search(r"commit ([0-9a-f]{7,40})", timing.get("command", ""))
    return {"wall": timing.get("wall_seconds"), "conditions": timing.get("conditions", "not recorded"),
            "code": code.group(1)[:7] if code else "-", "ema": cfg["settings"].get("ema") or 0.0,
            "auc": m["auc"], "acc": m["acc"], "best_epoch": m.get("best_epoch"), "epochs": epochs,
            "requested": cfg["settings"].get("epochs"), "ensemble": cfg["settings"].get("ensemble") or 1,
            "tta": cfg["settings"].get("tta") or "none", "cpu": timing.get("cpu", "not recorded"),
            "train_seconds": m.get("train_seconds")}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", default="pneumoniamnist,breastmnist")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--data-dir", default=default_data_dir())
    p.add_argument("--out", default="runs/accuracy", help="runs go to OUT/<dataset>-seed<S>")
    p.add_argument("--markdown", default=None, help="write the tables to this Markdown file")
    p.add_argument("--reuse", action="store_true", help="summarise finished runs in --out instead of training")
    p.add_argument("--conditions", default="nothing else (one run at a time)",
                   help="what else ran on the machine during new runs (stored in wall.json, shown per run)")
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    summary = ["| dataset | test AUC (mean +- std) | test ACC (mean +- std) | seeds | wall s / run (max) | "
               "ResNet-18 (28) AUC / ACC | AutoML Vision AUC / ACC |", "|---|---|---|---|---|---|---|"]
    per_run = ["| dataset | seed | test AUC | test ACC | ensemble members | EMA decay | test-time flips | "
               "epochs trained (recipe) | best epoch | wall s | code | CPU | machine shared with |",
               "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in args.datasets.split(","):
        rows = []
        for seed in seeds:
            out = os.path.join(REPO, args.out, f"{name}-seed{seed}")
            if not (args.reuse and os.path.exists(os.path.join(out, "metrics.json"))):
                run_once(name, seed, out, args.data_dir, args.conditions)
            r = read_run(out)
            rows.append(r)
            wall = "n/a" if r["wall"] is None else f"{r['wall']:.0f}"
            print(f"{name} seed {seed}: AUC {r['auc']:.4f}  ACC {r['acc']:.4f}  {wall}s", flush=True)
            ema = f"{r['ema']:.4g}" if r["ema"] else "off"
            per_run.append(f"| {name} | {seed} | {r['auc']:.4f} | {r['acc']:.4f} | {r['ensemble']} | {ema} | "
                           f"{r['tta']} | {r['epochs']} ({r['requested']}) | {r['best_epoch']} | {wall} | "
                           f"{r['code']} | {r['cpu']} | {r['conditions']} |")
        aucs, accs = [r["auc"] for r in rows], [r["acc"] for r in rows]
        walls = [r["wall"] if r["wall"] is not None else r["train_seconds"] for r in rows]
        b = BASELINES.get(name, {})
        fmt = lambda v: f"{v[0]:.3f} / {v[1]:.3f}" if v else "-"  # noqa: E731
        summary.append(f"| {name} | {np.mean(aucs):.4f} +- {np.std(aucs):.4f} | {np.mean(accs):.4f} +- "
                       f"{np.std(accs):.4f} | {args.seeds} | {np.mean(walls):.0f} ({np.max(walls):.0f}) | "
                       f"{fmt(b.get('resnet18_28'))} | {fmt(b.get('automl'))} |")
    text = "\n".join(summary) + "\n\nPer run:\n\n" + "\n".join(per_run)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(
                "# Accuracy of the default recipes\n\n"
                "Generated by `examples/accuracy.py`; do not edit by hand.\n\n"
                "Each run is `tinycnn train --dataset NAME --seed S --data-dir ../shared/data` with default "
                "settings: test split, official MedMNIST evaluator, the checkpoint chosen by validation data "
                "only (best validation AUC, a tie going to the lower validation loss). Machine: this project's "
                "2-core CPU (per run: its model and vector extension, and what else ran). \"wall s\" is the whole "
                "`tinycnn train` process (data loading, training, test evaluation, plots); the limit is "
                f"{LIMIT_S} s. The recipe fits its epochs to a 13-minute training budget, so a slower machine "
                "trains fewer epochs (\"epochs trained (recipe)\").\n\n" + text + "\n")


if __name__ == "__main__":
    main()
