"""Accuracy of triage's template miner against Drain3 on Loghub-2k (Loghub-2.0 metrics).

    python bench/loghub.py --data ../shared/loghub2k --json out.json

Both engines are fed the ``Content`` column of ``<S>_2k.log_structured_corrected.csv`` in line order;
each line is labelled with the cluster it ends in after the whole file (its final template), as the
Loghub evaluation does. Metrics, as defined by the Loghub-2.0 paper (ISSTA 2024) and its code:

- GA: a line is correct when the set of lines of its predicted group equals the set of lines of its
  ground-truth group; GA = correct lines / lines.
- FGA: a predicted group is correct when it equals a ground-truth group exactly; precision = correct /
  predicted groups, recall = correct / true groups, FGA = their F1.
- PA: a line is correct when its predicted template equals its ground-truth template, both normalised
  by ``normalise_template`` (``<*>`` placeholders, consecutive placeholders folded, whitespace folded).

Drain3 runs with ``TemplateMiner(config=TemplateMinerConfig())``: its defaults, no masking added.
triage runs ``StreamingClusterer.add`` on one ``Event`` per line, one global default configuration.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import drain3_miner, normalise_template, systems

from triage.clustering import StreamingClusterer
from triage.model import Event, Level


def run_triage(lines: list[str]) -> tuple[list[str], list[str]]:
    """Cluster id and final template per line."""
    clusterer = StreamingClusterer(max_clusters=1_000_000)
    ids: list[str] = []
    for i, line in enumerate(lines):
        ev = Event(timestamp=float(i), level=Level.INFO, message=line, raw=line, source="bench",
                   stream="bench", offset=i, end=i + 1)
        ids.append(clusterer.add(ev).cluster.id)
    final: list[str] = []
    templates: list[str] = []
    for cid in ids:
        cluster = clusterer.get(cid)
        assert cluster is not None
        final.append(cluster.id)
        templates.append(cluster.template)
    return final, templates


def run_drain3(lines: list[str]) -> tuple[list[str], list[str]]:
    miner: Any = drain3_miner()
    ids = [miner.add_log_message(line)["cluster_id"] for line in lines]
    by_id = {c.cluster_id: c.get_template() for c in miner.drain.clusters}
    return [str(i) for i in ids], [by_id[i] for i in ids]


def grouping_accuracy(truth: list[str], pred: list[str]) -> tuple[float, float]:
    """(GA, FGA) as in Loghub-2.0."""
    true_groups: dict[str, set[int]] = defaultdict(set)
    pred_groups: dict[str, set[int]] = defaultdict(set)
    for i, (t, p) in enumerate(zip(truth, pred, strict=True)):
        true_groups[t].add(i)
        pred_groups[p].add(i)
    correct_lines = 0
    correct_groups = 0
    for members in pred_groups.values():
        labels = {truth[i] for i in members}
        if len(labels) == 1 and true_groups[next(iter(labels))] == members:
            correct_lines += len(members)
            correct_groups += 1
    ga = correct_lines / len(truth)
    precision = correct_groups / len(pred_groups)
    recall = correct_groups / len(true_groups)
    fga = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return ga, fga


def parsing_accuracy(truth: list[str], pred: list[str]) -> float:
    ok = sum(normalise_template(t) == normalise_template(p) for t, p in zip(truth, pred, strict=True))
    return ok / len(truth)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "loghub2k")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--only", default="", help="comma-separated system names")
    ap.add_argument("--errors", type=int, default=0, help="print this many wrong groups per system")
    args = ap.parse_args(argv)
    only = {s for s in args.only.split(",") if s}
    result: dict[str, dict[str, Any]] = {"triage": {"systems": {}}, "drain3": {"systems": {}}}
    secs: Counter[str] = Counter()
    print(f"{'system':<10} {'triage GA':>9} {'FGA':>6} {'PA':>6}   {'drain3 GA':>9} {'FGA':>6} {'PA':>6}"
          f"   {'true':>5} {'triage':>6} {'drain3':>6}")
    for system in systems(args.data):
        if only and system.name not in only:
            continue
        row: dict[str, tuple[float, float, float, int]] = {}
        for name, fn in (("triage", run_triage), ("drain3", run_drain3)):
            t0 = time.perf_counter()
            ids, templates = fn(system.contents)
            secs[name] += time.perf_counter() - t0
            ga, fga = grouping_accuracy(system.templates, ids)
            pa = parsing_accuracy(system.templates, templates)
            result[name]["systems"][system.name] = {"GA": round(ga, 4), "FGA": round(fga, 4), "PA": round(pa, 4)}
            row[name] = (ga, fga, pa, len(set(ids)))
            if name == "triage" and args.errors:
                _show_errors(system.contents, system.templates, ids, templates, args.errors)
        t, d = row["triage"], row["drain3"]
        print(f"{system.name:<10} {t[0]:>9.3f} {t[1]:>6.3f} {t[2]:>6.3f}   {d[0]:>9.3f} {d[1]:>6.3f} {d[2]:>6.3f}"
              f"   {len(set(system.templates)):>5} {t[3]:>6} {d[3]:>6}")
    for name in ("triage", "drain3"):
        per = result[name]["systems"].values()
        n = max(len(per), 1)
        result[name]["average"] = {k: round(sum(s[k] for s in per) / n, 4) for k in ("GA", "FGA", "PA")}
    t, d = result["triage"]["average"], result["drain3"]["average"]
    print(f"{'average':<10} {t['GA']:>9.3f} {t['FGA']:>6.3f} {t['PA']:>6.3f}   {d['GA']:>9.3f} {d['FGA']:>6.3f}"
          f" {d['PA']:>6.3f}")
    print(f"time: triage {secs['triage']:.2f}s, drain3 {secs['drain3']:.2f}s")
    if args.json:
        import json

        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


def _show_errors(lines: list[str], truth: list[str], ids: list[str], templates: list[str], limit: int) -> None:
    true_groups: dict[str, set[int]] = defaultdict(set)
    pred_groups: dict[str, set[int]] = defaultdict(set)
    for i, (t, p) in enumerate(zip(truth, ids, strict=True)):
        true_groups[t].add(i)
        pred_groups[p].add(i)
    shown = 0
    for t, members in true_groups.items():
        preds = {ids[i] for i in members}
        if len(preds) == 1 and pred_groups[next(iter(preds))] == members:
            continue
        print(f"  TRUE {t!r} ({len(members)} lines)")
        for p in list(preds)[:4]:
            pm = pred_groups[p]
            i = min(pm & members)
            extra = {truth[j] for j in pm} - {t}
            print(f"     pred {templates[i]!r} ({len(pm & members)}/{len(pm)}) e.g. {lines[i]!r}")
            for e in list(extra)[:2]:
                print(f"        also-true {e!r}")
        shown += 1
        if shown >= limit:
            break


if __name__ == "__main__":
    raise SystemExit(main())
