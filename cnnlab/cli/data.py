"""`cnnlab data show DATA`: print the dataset card and write a PNG of samples with/without augmentation;
`cnnlab data fetch NAME`: download a named dataset into the cache."""

from __future__ import annotations

from ..data.folder import RESIZE_POLICIES  # light: folder imports numpy, not torch


def add_data_options(p) -> None:
    """The dataset options of `cnnlab data show`: TrainConfig's data fields, so train.run.load_data reads them."""
    p.add_argument("data", help="digits, mnist, fashion-mnist, kmnist, usps, cifar10, cifar100, an image folder "
                   "or a .npz file")
    p.add_argument("--data-dir", help="folder already holding the dataset's files (used as is)")
    p.add_argument("--offline", action="store_true", help="never use the network")
    p.add_argument("--image-size", type=int, help="resize to this square size")
    p.add_argument("--pad", type=int, default=0, help="zero-pad every image by P pixels per side")
    p.add_argument("--channels", type=int, choices=(1, 3), help="convert to grey (1) or RGB (3)")
    p.add_argument("--resize", choices=RESIZE_POLICIES, default="shorter-crop",
                   help="image-folder resize policy (default: shorter side + centre crop)")
    p.add_argument("--limit-per-class", type=int, help="keep at most N samples per class (quick runs)")
    p.add_argument("--seed", type=int, default=0, help="split / augmentation seed")


def add_parser(sub):
    """Register `cnnlab data show` and `cnnlab data fetch`."""
    p = sub.add_parser("data", help="inspect and fetch datasets")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION", parser_class=type(p))
    show = dsub.add_parser("show", help="print the dataset card and write a sample grid PNG")
    add_data_options(show)
    show.add_argument("--augment", metavar="SPEC",
                      help="augmentation spec, e.g. flip,crop:4,jitter:0.2@0.5, or none (default: a random crop "
                      "of 1/8 of the side, plus flip for colour images only: mirrored digits are not digits)")
    show.add_argument("--out", default="samples.png", help="PNG path (default: %(default)s)")
    show.add_argument("--samples", type=int, default=16, help="number of samples in the grid")
    show.set_defaults(func=_show)
    fetch = dsub.add_parser("fetch", help="download a named dataset into the cache ($CNNLAB_HOME)")
    fetch.add_argument("data", help="mnist, fashion-mnist, kmnist, usps, cifar10 or cifar100")
    fetch.set_defaults(func=_fetch)
    p.set_defaults(func=lambda args: p.print_help() or 0)


def _show(args) -> int:
    """Print the dataset card and write the sample grid (original beside augmented)."""
    from ..data.augment import build_augmentation
    from ..data.show import dataset_card, default_augment_spec, sample_grid
    from ..errors import ConfigError
    from ..train.config import TrainConfig
    from ..train.run import load_data
    from ..utils.io import check_output_file

    # The data options are TrainConfig's: validated by the same rules (and the augmentation spec with
    # them), before any slow load and before anything is written.
    cfg = TrainConfig(data=args.data, data_dir=args.data_dir, offline=args.offline, image_size=args.image_size,
                      channels=args.channels, resize=args.resize, limit_per_class=args.limit_per_class,
                      seed=args.seed, augment=args.augment).validate()
    if args.samples < 1:
        raise ConfigError("--samples must be >= 1")
    check_output_file(args.out, "--out")
    ds = load_data(cfg)
    spec = default_augment_spec(ds) if args.augment is None else args.augment
    augment = build_augmentation(spec, ds)
    print(dataset_card(ds, getattr(augment, "spec", None)))
    out = sample_grid(ds, augment, args.out, n=args.samples, seed=args.seed, spec=spec)
    print(f"samples      {out}")
    return 0


def _fetch(args) -> int:
    """Download (and verify) a named dataset into the cache; prints where its files are."""
    from ..data import SOURCES, load_dataset
    from ..errors import ConfigError

    downloadable = [name for name in SOURCES if name != "digits"]  # digits ships with scikit-learn
    if args.data not in downloadable:
        raise ConfigError(f"fetch knows {', '.join(downloadable)}; not {args.data!r}")
    ds = load_dataset(args.data)
    print(f"{ds.name}: {', '.join(ds.info.get('paths', []))}")
    return 0
