#!/usr/bin/env python
"""Write a dataset in lth's streaming format (`dataset.stream=true`): ArrayRecord, one record per
example, plus labels and metadata (`lth.data.stream_prepare`).

    python scripts/prepare_data.py NAME OUT [--source auto|files|tfds] [--data-dir DIR]

NAME is a built-in dataset (mnist1d, mnist, fashion_mnist, cifar10) or a TFDS name. The copy is
written atomically to `OUT/<NAME>-<hash of the settings that change the arrays>`; train on it with
`dataset=NAME dataset.stream=true dataset.stream_dir=OUT`. (Without this script, a streamed run
prepares the copy itself under `dataset.stream_dir`, by default ~/.cache/lth/stream.)
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lth.config.schema import DatasetConfig  # noqa: E402
from lth.data import DataError, load_raw  # noqa: E402
from lth.data.stream import stream_folder  # noqa: E402
from lth.data.stream_prepare import is_prepared, prepare  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name", help="dataset name: mnist1d, mnist, fashion_mnist, cifar10 or a TFDS name")
    ap.add_argument("out", help="folder for prepared copies (use it as dataset.stream_dir)")
    ap.add_argument("--source", default="auto", choices=["auto", "files", "tfds"], help="as dataset.source")
    ap.add_argument("--data-dir", default=None, help="where built-in datasets are (default: $LTH_DATA_DIR, else ~/.cache/lth/datasets)")
    args = ap.parse_args(argv)
    data_dir = os.path.abspath(os.path.expanduser(
        args.data_dir or os.environ.get("LTH_DATA_DIR") or os.path.join("~", ".cache", "lth", "datasets")))
    cfg = DatasetConfig(name=args.name, source=args.source, stream=True, stream_dir=args.out)
    folder = stream_folder(cfg)
    existed = is_prepared(folder)
    try:
        prepare(cfg, data_dir, folder, load_raw)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{'already prepared' if existed else 'prepared'}: {folder}\n"
          f"train on it with: dataset={args.name} dataset.stream=true dataset.stream_dir={os.path.abspath(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
