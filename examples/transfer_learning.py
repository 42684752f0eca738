"""Transfer learning: a network trained on chest X-rays (PneumoniaMNIST) fine-tuned on breast ultrasound.

    python examples/transfer_learning.py [--data-dir DIR] [--epochs N] [--source-epochs N] [--freeze PREFIXES]

1. trains the VGG-BN model on pneumoniamnist (or reuses --source CKPT),
2. starts a breastmnist run from those weights (`init_from`); the classifier gets a new head when the
   number of classes differs (both are binary here, so the head is kept and fine-tuned),
   with the first conv blocks frozen (`--freeze features.0,features.1,features.3,features.4` by default),
3. trains the same recipe from scratch for comparison and prints both test results.
"""
from _common import parser, print_metrics

from tinycnn.training import train_run


def main():
    p = parser(__doc__.splitlines()[0], "runs/transfer")
    p.add_argument("--source", default=None, help="pneumoniamnist checkpoint to start from (else trained here)")
    p.add_argument("--source-epochs", type=int, default=10)
    p.add_argument("--freeze", default="features.0,features.1,features.3,features.4")
    args = p.parse_args()
    common = {"data_dir": args.data_dir, "seed": args.seed}
    source = args.source
    if source is None:
        src = train_run({**common, "dataset": "pneumoniamnist", "epochs": args.source_epochs,
                         "out": f"{args.out}/source-pneumonia"}, quiet=args.quiet)
        print_metrics("source model on PneumoniaMNIST test:", src["metrics"])
        source = f"{src['run_dir']}/best.safetensors"
    ft = train_run({**common, "dataset": "breastmnist", "epochs": args.epochs, "init_from": source,
                    "freeze": args.freeze, "out": f"{args.out}/finetuned-breast"}, quiet=args.quiet)
    scratch = train_run({**common, "dataset": "breastmnist", "epochs": args.epochs,
                         "out": f"{args.out}/scratch-breast"}, quiet=args.quiet)
    print_metrics("BreastMNIST test, fine-tuned from pneumonia:", ft["metrics"])
    print_metrics("BreastMNIST test, trained from scratch:", scratch["metrics"])


if __name__ == "__main__":
    main()
