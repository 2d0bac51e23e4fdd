"""Regenerate the README's "Results" table from ``benchmarks/results/*.json``.

    .venv/bin/python benchmarks/report.py            # rewrite the table in README.md
    .venv/bin/python benchmarks/report.py --check    # exit 1 if README.md is out of date

The table sits between the markers ``<!-- results:start -->`` and ``<!-- results:end -->``.
Each row is one headline metric: every metric that has a target, plus the first ``--top``
scalar metrics of each file (the format puts ratios first), with its 95 % interval when the file
holds one as ``<metric>_ci`` ([low, high]); the JSON files hold the rest.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from basics.atomic import atomic_file

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- results:start -->", "<!-- results:end -->"


def _fmt(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def render_table(results_dir: Path, top: int = 3) -> str:
    """Markdown for every result file in ``results_dir`` (sorted by benchmark name).

    Raises:
        ValueError: a result file lacks one of the keys of the format in DESIGN.md.
    """
    rows = ["| benchmark | metric | value | target | met | date | machine |", "|---|---|---|---|---|---|---|"]
    files = sorted(results_dir.glob("*.json"))
    for path in files:
        data = json.loads(path.read_text())
        missing = [k for k in ("benchmark", "date", "machine", "metrics", "targets", "met") if k not in data]
        if missing:
            raise ValueError(f"{path}: missing keys {missing}")
        scalars = [(k, v) for k, v in data["metrics"].items() if not isinstance(v, (dict, list))]
        headline = {k for k, _ in scalars[:top]} | set(data["targets"])
        for name, value in scalars:
            if name not in headline:
                continue
            target = data["targets"].get(name, "")
            met = data["met"].get(name, "")
            shown = _fmt(value)
            ci = data["metrics"].get(f"{name}_ci")
            if isinstance(ci, list) and len(ci) == 2 and all(isinstance(x, (int, float)) for x in ci):
                shown += f" [{_fmt(float(ci[0]))}, {_fmt(float(ci[1]))}]"  # a ratio never without its interval
            rows.append(f"| {data['benchmark']} | {name} | {shown} | {_fmt(target)} | {_fmt(met)} | "
                        f"{data['date'][:10]} | {data['machine']} |")
    if not files:
        rows.append("| (no results yet) | | | | | | |")
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only check that README.md is up to date")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--top", type=int, default=3, help="scalar metrics per benchmark besides targeted ones")
    args = parser.parse_args()
    text = args.readme.read_text()
    if START not in text or END not in text:
        print(f"{args.readme}: markers {START} / {END} not found", file=sys.stderr)
        return 2
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{START}\n{render_table(args.results, args.top)}\n{END}{tail}"
    if args.check:
        if new != text:
            print("README.md results table is out of date: run benchmarks/report.py", file=sys.stderr)
            return 1
        return 0
    with atomic_file(args.readme, ".md") as tmp:
        Path(tmp).write_text(new)
    print(f"updated {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
