"""`cnnlab transfer-study [MODEL] --data DATA`: Yosinski et al.'s transferability experiment at laptop scale —
base models on class halves A and B, then AnB / AnB+ / BnB / BnB+ for n copied stages; table and figure."""

from __future__ import annotations

EPILOG = """examples:
  cnnlab transfer-study --quick                               LeNet-5, digits split into halves, 3 seeds
  cnnlab transfer-study lenet5 --data digits --per-class 20 --seeds 5
  cnnlab transfer-study lenet5 --data digits --data-b usps.npz   two datasets: A = digits, B = USPS"""


def add_parser(sub):
    import argparse

    p = sub.add_parser("transfer-study", help="how transferable is each stage? (Yosinski et al. 2014) table + plot",
                       description="Split the data's classes into halves A and B (a random split per seed, or "
                                   "--classes-a), or take two datasets; train base models on A and B; for n = 1..L "
                                   "copy the first n stages of a base model, frozen (AnB, BnB) or fine-tuned (AnB+, "
                                   "BnB+), train on B; report test accuracy on B against n, mean ± std over seeds.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?", default="lenet5", metavar="MODEL", help="model (default: lenet5)")
    p.add_argument("--data", default="digits", help="dataset whose classes are split in halves (default: digits)")
    p.add_argument("--data-b", metavar="DATA", help="a second dataset as B (then A is all of --data)")
    p.add_argument("--classes-a", metavar="C1,C2,...", help="fixed class names for A (default: a random half per "
                                                           "seed)")
    p.add_argument("--seeds", type=int, help="repetitions with different splits and seeds (default: 3)")
    p.add_argument("--epochs", type=int, help="epochs per training run (default: 20; --quick: 8)")
    p.add_argument("--per-class", type=int, metavar="N", help="training images per class in B (default: all)")
    p.add_argument("--image-size", type=int, metavar="N", help="resize images to NxN (default: the data's size)")
    p.add_argument("--lr", type=float, help="learning rate of every run (default: cnnlab train's)")
    p.add_argument("--batch-size", type=int, help="batch size of every run (default: cnnlab train's)")
    p.add_argument("--threads", type=int, help="CPU threads per run (default: the idle cores)")
    p.add_argument("--out", metavar="DIR", help="study directory (default runs/transfer-study-MODEL-DATA); "
                                                "finished runs in it are reused")
    p.add_argument("--quick", action="store_true", help="8 epochs and 3 seeds unless given: a few minutes on the "
                                                        "digits on 2 cores")
    p.set_defaults(func=_run)


def _run(args) -> int:
    import sys

    from ..transfer.study import CONDITIONS, transfer_study

    options = {k: getattr(args, k) for k in ("lr", "batch_size", "threads") if getattr(args, k) is not None}
    classes_a = [c.strip() for c in args.classes_a.split(",")] if args.classes_a else None
    result = transfer_study(args.model, args.data, data_b=args.data_b, classes_a=classes_a, seeds=args.seeds,
                            epochs=args.epochs, per_class=args.per_class, image_size=args.image_size,
                            out=args.out, quick=args.quick, train_options=options,
                            progress=lambda line: print(f"cnnlab transfer-study: {line}", file=sys.stderr,
                                                        flush=True))
    from rich.console import Console
    from rich.table import Table

    s = result.settings
    table = Table(title=f"test accuracy on B, mean ± std over {s['seeds']} seed(s) ({s['model']}, {s['epochs']} "
                        f"epochs per run)")
    table.add_column("n", justify="right")
    table.add_column("copied stages")
    for cond in CONDITIONS:
        table.add_column(cond, justify="right", no_wrap=True)
    for row in result.rows:
        table.add_row(str(row["n"]), row["copied"],
                      *(f"{row[c]['mean']:.4f} ± {row[c]['std']:.4f}" for c in CONDITIONS))
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    console.print(table)
    bases = ", ".join(f"{b['A']:.4f}/{b['B']:.4f}" for b in result.base)
    print(f"base models A/B test accuracy per seed: {bases}")
    print(f"plot written to {result.plot}; table to {result.out / 'table.md'}; every run in {result.out / 'runs'}")
    return 0
