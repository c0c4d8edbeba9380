"""The commands' argument parsing: a parser whose errors end with the useful line, and lists of
numbers that start with a minus sign (`--alpha -1,1`): argparse takes "-1,1" for an option and reports
a missing value; attached to their flag (`--alpha=-1,1`) they parse, and the command's own check then
judges the values."""
from __future__ import annotations

import argparse
import re
from typing import Iterable, List, Optional, Sequence

_NUMBER_LIST = re.compile(r"^-[0-9.]+([eE][-+]?[0-9]+)?(,\s*[-+]?[0-9.]+([eE][-+]?[0-9]+)?)*,?$")


class CommandParser(argparse.ArgumentParser):
    """An ArgumentParser whose error is a pointer to --help and then the error itself, the last line
    (not argparse's usage block, which for the trainer runs to dozens of lines)."""
    hint = "see --help for the options"

    def error(self, message):
        self.exit(2, f"{self.prog}: {self.hint}\n{self.prog}: error: {message}\n")


def attach_number_lists(argv: Optional[Sequence[str]], flags: Iterable[str]) -> Optional[List[str]]:
    """argv with `FLAG -1,2` rewritten as `FLAG=-1,2` for the given flags (None stays None: argparse
    then reads sys.argv, which is rewritten instead)."""
    import sys
    args = list(sys.argv[1:] if argv is None else argv)
    flags = set(flags)
    out: List[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a in flags and i + 1 < len(args) and _NUMBER_LIST.match(args[i + 1]):
            out.append(f"{a}={args[i + 1]}")
            i += 2
            continue
        out.append(a)
        i += 1
    return out
