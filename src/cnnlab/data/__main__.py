"""``python -m cnnlab.data [--no-download] NAME...``: find (or download) datasets and say where.

Exit status 1 when a dataset cannot be found (the message names the three ways to get it) or one
of its files is broken (the message names the file).
"""

from __future__ import annotations

import argparse
import sys

from cnnlab.data.sources import DATASETS, load_split, locate
from cnnlab.errors import DatasetNotFoundError, IDXFormatError
from cnnlab.resolvers import project_root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cnnlab.data", description=__doc__)
    parser.add_argument("names", nargs="*", default=["fashion_mnist"], choices=list(DATASETS))
    parser.add_argument("--root", default=str(project_root() / "data"))
    parser.add_argument("--no-download", action="store_true", help="only look, never download")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    status = 0
    for name in args.names:
        try:
            folder = locate(name, args.root, download=not args.no_download)
            sizes = [load_split(name, args.root, split)[0].shape[0] for split in ("train", "test")]
        except (DatasetNotFoundError, IDXFormatError) as err:
            if not args.quiet:
                print(f"error: {err}", file=sys.stderr)
            status = 1
            continue
        print(f"{name}: {sizes[0]:,} train + {sizes[1]:,} test images in {folder}")
    return status


if __name__ == "__main__":
    sys.exit(main())
