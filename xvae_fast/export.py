"""`python -m xvae_fast.export --run DIR --out DIR`: a run folder's trained model as a portable export,
`config.json` (the resolved configuration, the data description and the fitted prior, readable) and
`model.safetensors` (weights and buffers only: no optimizer, no pickle). `xvae_fast.load(DIR)` and
`python -m xvae_fast.sample --run DIR` read it on any machine and device (export_format.py)."""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from .argv import CommandParser
from .errors import XVAEError


def build_parser() -> argparse.ArgumentParser:
    p = CommandParser(prog="python -m xvae_fast.export",
                                description="Export a trained run as config.json + model.safetensors.")
    p.add_argument("--run", required=True, metavar="DIR", help="run folder written by xvae_fast.train "
                   "(or an export, to copy it)")
    p.add_argument("--out", required=True, metavar="DIR", help="export folder: new or empty (or an "
                   "earlier export, with --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier export in --out")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from .export_format import check_out_folder
        from .trained import load
        check_out_folder(args.out, args.overwrite, "--out")     # before the weights are read
        model = load(args.run, "cpu")
        out = model.save(args.out, overwrite=args.overwrite)
    except XVAEError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out} ({model.title}; config.json, model.safetensors); "
          f"load it with xvae_fast.load({args.out!r})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
