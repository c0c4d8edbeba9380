"""The one rule for progress bars: on stderr, only when stderr is a terminal (tqdm's disable=None),
never left behind, and off entirely with a command's --no-progress."""
from __future__ import annotations

import sys
from typing import Iterable, Optional


def progress_bar(iterable: Optional[Iterable] = None, *, enabled: bool = True, total: Optional[int] = None,
                 desc: str = "", unit: str = "it", initial: int = 0):
    """A tqdm bar over `iterable` (or a manual one with `total`); a disabled bar does nothing."""
    from tqdm import tqdm
    return tqdm(iterable, total=total, initial=initial, desc=desc, unit=unit, leave=False,
                dynamic_ncols=True, file=sys.stderr, disable=None if enabled else True)


def shorten(text: str, limit: int = 300) -> str:
    """`text` cut to at most `limit` characters at a word boundary, with an ellipsis when cut."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[:limit - 1]
    if " " in cut:
        cut = cut[:cut.rindex(" ")]
    return cut.rstrip(" ,;:") + "…"
