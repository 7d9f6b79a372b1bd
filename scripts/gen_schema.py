"""Write docs/finding.schema.json: the JSON Schema of a findings-topic message value.

Generated from the pydantic ``Finding`` model (plus ``schema_version``); a test fails when the file is
out of date. Run: ``python scripts/gen_schema.py [--check]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from connectors.sinks.kafka import finding_schema

OUT = Path(__file__).resolve().parent.parent / "docs" / "finding.schema.json"


def render() -> str:
    return json.dumps(finding_schema(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--check", action="store_true", help="exit 1 if the file is out of date")
    args = p.parse_args(argv)
    text = render()
    if args.check:
        if not OUT.exists() or OUT.read_text(encoding="utf-8") != text:
            print(f"{OUT} is out of date: run python scripts/gen_schema.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
