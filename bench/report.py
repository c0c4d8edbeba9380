"""What every bench script shares on its command line and in its output: choosing named setups, and
writing one run's report as JSON (every number) plus Markdown (the tables) side by side."""
from __future__ import annotations

import argparse
import json
import os
from typing import Any, Callable, Dict, Iterable, List


def chosen_setups(ap: argparse.ArgumentParser, text: str, setups: Iterable[str]) -> List[str]:
    """The comma-separated setup names of `text`; an unknown one is an argparse error (exit 2)."""
    known = list(setups)
    names = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in names if s not in known]
    if bad:
        ap.error(f"unknown setup(s) {bad}; choose from {', '.join(known)}")
    return names


def write_report(out: str, stem: str, report: Dict[str, Any],
                 to_markdown: Callable[[Dict[str, Any]], str]) -> str:
    """OUT/STEM.json and OUT/STEM.md; returns the path without its suffix."""
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, stem)
    with open(path + ".json", "w") as f:
        json.dump(report, f, indent=1)
    with open(path + ".md", "w") as f:
        f.write(to_markdown(report))
    print(f"wrote {path}.json and {path}.md")
    return path
