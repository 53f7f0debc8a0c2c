"""`cnnlab probe FEATURES.npz [...] --classifier logreg|svm`: linear classifiers on fixed features (DeCAF's
table: LogReg and SVM on DeCAF6 / DeCAF7), C cross-validated, test accuracy reported."""

from __future__ import annotations


def add_parser(sub):
    p = sub.add_parser("probe", help="fit linear probes (logistic regression / linear SVM) on extracted features",
                       description="Fit scikit-learn's Pipeline(StandardScaler, LogisticRegression | LinearSVC) on "
                                   "the training split of each features file (from `cnnlab features`), choosing C "
                                   "by stratified k-fold cross-validation, and report validation and test "
                                   "accuracy. Several files and both classifiers give the DeCAF-style table.")
    p.add_argument("features", nargs="+", metavar="FEATURES.npz", help="features files from `cnnlab features`")
    p.add_argument("--classifier", default="logreg",
                   help="logreg, svm, or both as logreg,svm (default: logreg)")
    p.add_argument("--C", dest="cs", metavar="C1,C2,...", help="candidate C values (default: 0.001,…,100)")
    p.add_argument("--cv", type=int, default=5, help="cross-validation folds (default: 5)")
    p.add_argument("--fit-on", choices=("train", "train+val"), default="train",
                   help="fit on the training split, or on train and validation together (default: train)")
    p.add_argument("--seed", type=int, default=0, help="fold shuffling seed (default: 0)")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(func=_run)


def _parse(args):
    from ..errors import ConfigError
    from ..transfer.probe import CLASSIFIERS, DEFAULT_CS, check_cs

    classifiers = [c.strip() for c in args.classifier.split(",") if c.strip()]
    bad = [c for c in classifiers if c not in CLASSIFIERS]
    if not classifiers or bad:
        raise ConfigError(f"--classifier {args.classifier}: expected logreg, svm or logreg,svm")
    cs = DEFAULT_CS
    if args.cs:
        try:
            cs = tuple(float(v) for v in args.cs.split(","))
        except ValueError:
            raise ConfigError(f"--C {args.cs}: expected comma-separated numbers") from None
        cs = tuple(check_cs(cs))  # checked when parsed, before any file is read
    if args.cv < 2:
        raise ConfigError(f"--cv must be at least 2, got {args.cv}")
    return classifiers, cs


def _run(args) -> int:
    import json

    from ..transfer.features import load_features
    from ..transfer.probe import fit_probe

    classifiers, cs = _parse(args)
    sets = [load_features(path) for path in args.features]  # every file checked before any fitting
    results = [fit_probe(fs, clf, Cs=cs, cv=args.cv, seed=args.seed, fit_on=args.fit_on)
               for fs in sets for clf in classifiers]
    if args.format == "json":
        print(json.dumps([r.to_dict() for r in results], indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="linear probes (C by cross-validation on the training split)")
    for col, just in (("features", "left"), ("layer", "left"), ("dim", "right"), ("classifier", "left"),
                      ("C", "right"), ("cv acc", "right"), ("val acc", "right"), ("test acc", "right"),
                      ("train / test", "right")):
        table.add_column(col, justify=just, no_wrap=True)
    for r in results:
        val = "-" if r.val_accuracy is None else f"{r.val_accuracy:.4f}"
        table.add_row(r.features, r.layer, str(r.dim), r.classifier, f"{r.C:g}", f"{r.cv_accuracy:.4f}", val,
                      f"{r.test_accuracy:.4f}", f"{r.n_train} / {r.n_test}")
    console = Console()
    if not console.is_terminal:
        console = Console(width=200)
    console.print(table)
    return 0
