"""Breast ultrasound (BreastMNIST, malignant vs normal/benign): train, evaluate, plot, explain.

    python examples/breast_ultrasound.py [--data-dir DIR] [--epochs N] [--seed S] [--out runs/breast]

The default recipe adds horizontal flips and class-balanced loss weights here because the training set
is small (546 images) and imbalanced (147 malignant vs 399): both follow from the dataset's properties.
"""
from _common import gradcam_figure, parser, print_metrics

from tinycnn.training import train_run


def main():
    args = parser(__doc__.splitlines()[0], "runs/breast").parse_args()
    res = train_run({"dataset": "breastmnist", "data_dir": args.data_dir, "epochs": args.epochs,
                     "seed": args.seed, "out": args.out}, quiet=args.quiet)
    cam = gradcam_figure(res["run_dir"], "breastmnist", args.data_dir)
    print(f"plots in {res['run_dir']}: curves.png roc.png confusion.png; Grad-CAM: {cam}")
    print_metrics("BreastMNIST test metrics (best val-AUC checkpoint):", res["metrics"])


if __name__ == "__main__":
    main()
