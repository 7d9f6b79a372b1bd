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


MB = 2**20


def rss_mb() -> float:
    """The process's current resident set, in MiB."""
    import resource

    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / MB


def max_rss_mb() -> float:
    """The process's high-water resident set (``ru_maxrss``, KiB on Linux), in MiB."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_max_rss() -> bool:
    """Reset the high-water mark behind ``ru_maxrss`` to the current RSS (Linux ``clear_refs`` 5).

    Without the reset, ``ru_maxrss`` still holds whatever the process touched during setup (reading the
    CSVs, imports) and, in a forked child, the parent's resident set at fork time; growth of the engine
    into memory freed by the setup would then be invisible. Returns whether the reset took effect.
    """
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return max_rss_mb() <= rss_mb() + 1.0
