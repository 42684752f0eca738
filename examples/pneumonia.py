"""Pneumonia on chest X-rays (PneumoniaMNIST): train with the default recipe, evaluate, plot, explain.

    python examples/pneumonia.py [--data-dir DIR] [--epochs N] [--seed S] [--out runs/pneumonia]

Writes the run directory (config, checkpoints, history.csv, metrics.json, curves/roc/confusion PNGs)
plus gradcam.png, and prints the test metrics of the best-validation-AUC checkpoint.
"""
from _common import gradcam_figure, parser, print_metrics

from tinycnn.training import train_run


def main():
    args = parser(__doc__.splitlines()[0], "runs/pneumonia").parse_args()
    res = train_run({"dataset": "pneumoniamnist", "data_dir": args.data_dir, "epochs": args.epochs,
                     "seed": args.seed, "out": args.out}, quiet=args.quiet)
    cam = gradcam_figure(res["run_dir"], "pneumoniamnist", args.data_dir)
    print(f"plots in {res['run_dir']}: curves.png roc.png confusion.png; Grad-CAM: {cam}")
    print_metrics("PneumoniaMNIST test metrics (best val-AUC checkpoint):", res["metrics"])


if __name__ == "__main__":
    main()
