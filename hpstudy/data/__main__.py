"""``python -m hpstudy.data``: fetch datasets ahead of time and list the registry.

``python -m hpstudy.data download cifar10 [--root DIR] [--option svhn_extra=true]``
downloads the files into torchvision's layout under the data root (on a
machine with internet), then builds the uint8 tensor cache, so that later
(offline) studies start at once. ``python -m hpstudy.data list`` prints the
datasets and their options. Exit codes: 0 done, 2 a dataset error (unknown
name, bad option, failed download).
"""

from __future__ import annotations

import argparse
import sys

import yaml

from ._registry import (
    DatasetError,
    StreamDataset,
    dataset_options,
    describe_dataset,
    list_datasets,
    load_dataset,
)
from .module import data_root


def _parse_options(items: list[str]) -> dict[str, object]:
    out: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise DatasetError(f"--option expects key=value (got '{item}')")
        out[key.strip()] = yaml.safe_load(value)
    return out


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m hpstudy.data", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    dl = sub.add_parser("download", help="download a dataset and build its tensor cache")
    dl.add_argument("dataset")
    dl.add_argument("--root", default=None, help="data root (default: $HPSTUDY_DATA or ~/.cache/hpstudy/data)")
    dl.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                    help="dataset option, e.g. svhn_extra=true (repeatable)")
    sub.add_parser("list", help="registered datasets and their options")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "list":
            for name in list_datasets():
                opts = ", ".join(sorted(dataset_options(name))) or "-"
                print(f"{name:14s} options: {opts}")
            return 0
        options = _parse_options(args.option)
        unknown = set(options) - dataset_options(args.dataset)
        if unknown:
            raise DatasetError(f"{args.dataset}: unknown option(s) {', '.join(sorted(unknown))}")
        describe_dataset(args.dataset, **options)  # validates the options cheaply
        root = data_root(args.root)
        raw = load_dataset(args.dataset, root=root, download=True, **options)
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    n_train = len(raw.train_targets if isinstance(raw, StreamDataset) else raw.train_y)
    print(f"{args.dataset}: ready in {root} ({n_train} training images; "
          f"cache: {raw.info.get('cache', 'none')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
