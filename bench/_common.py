"""Shared helpers for the clustering benchmarks: reading Loghub-2k, building engines.

The Loghub data is licensed for research use only: it is read in place from ``--data`` and never copied.
"""

from __future__ import annotations

import csv
import logging
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

csv.field_size_limit(sys.maxsize)


@dataclass(slots=True)
class System:
    name: str
    contents: list[str]
    templates: list[str]  # ground-truth EventTemplate per line
    params: list[list[str]]  # ground-truth ParameterList per line ([] where absent)


def systems(data: Path) -> Iterator[System]:
    """Every ``<S>/<S>_2k.log_structured_corrected.csv`` under ``data``, in name order."""
    for folder in sorted(p for p in data.iterdir() if p.is_dir()):
        path = folder / f"{folder.name}_2k.log_structured_corrected.csv"
        if not path.exists():
            continue
        contents: list[str] = []
        templates: list[str] = []
        params: list[list[str]] = []
        with path.open(newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                contents.append(row["Content"])
                templates.append(row["EventTemplate"])
                params.append(_param_list(row.get("ParameterList") or ""))
        yield System(folder.name, contents, templates, params)


def _param_list(text: str) -> list[str]:
    text = text.strip()
    if not text.startswith("["):
        return []
    try:
        import ast

        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return []
    return [str(v) for v in value] if isinstance(value, list | tuple) else []


def drain3_miner() -> object:
    """Drain3 with its default configuration (no masking, no tuning), quiet."""
    from drain3 import TemplateMiner
    from drain3.template_miner_config import TemplateMinerConfig

    logging.getLogger("drain3").setLevel(logging.ERROR)
    return TemplateMiner(config=TemplateMinerConfig())


_MULTI_WILD = re.compile(r"<\*>(?:\s*<\*>)+")
_SPACE = re.compile(r"\s+")


def normalise_template(template: str) -> str:
    """The template normalisation used for PA, on ground truth and predictions alike.

    Following the Loghub-2.0 evaluation conventions: ``<*>`` is the only placeholder, consecutive
    placeholders (with only whitespace between) are one, and runs of whitespace count as one space.
    """
    t = _SPACE.sub(" ", template.strip())
    return _MULTI_WILD.sub("<*>", t)
