"""``python -m benchmarks``: run the cases, print the table, write the JSON."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import signal
import statistics
import sys
import time
import traceback
from collections.abc import Sequence
from typing import Any

from benchmarks import _env
from benchmarks._case import Case, Context, check_target

README_START = ".. benchmark-table-start"
README_END = ".. benchmark-table-end"


def all_cases() -> list[Case]:
    from benchmarks import (
        backfill_case,
        events_cases,
        mysql_binlog,
        mysql_cases,
        pg_bulk,
        pg_cases,
        pg_durable_cases,
        redis_cases,
        sqlite_cases,
    )

    cases = [
        pg_cases.THROUGHPUT,
        pg_cases.LATENCY,
        pg_cases.NOTIFY_LATENCY,
        sqlite_cases.SQLITE,
        pg_cases.AIO,
        pg_cases.WRITER,
        pg_bulk.BULK,
        events_cases.CONDITION,
        events_cases.INCLUDE_OLD,
        pg_durable_cases.DURABLE,
        pg_durable_cases.DURABLE_LATENCY,
        backfill_case.BACKFILL,
        pg_durable_cases.POLL_LATENCY,
        pg_cases.MEMORY,
        pg_cases.STARTUP,
        redis_cases.RELAY,
        redis_cases.FANOUT,
        mysql_cases.MYSQL,
        mysql_binlog.BINLOG,
        mysql_binlog.BINLOG_MYSQL,
    ]
    return cases


def _fmt(value: float | None) -> str:
    if value is None or value != value:  # None or NaN
        return "-"
    size = abs(value)
    if float(value).is_integer() and size < 100:
        return f"{value:.0f}"
    if size >= 100:
        return f"{value:,.0f}"
    if size >= 10:
        return f"{value:.1f}"
    if size >= 1 or size == 0:
        return f"{value:.2f}"
    return f"{value:.3f}"


def summarise(case: Case, runs: list[dict[str, float]]) -> list[dict[str, Any]]:
    """Median, min, max of each row, and its ratio (or difference) to its baseline."""
    rows = []
    for row in case.rows:
        values = [r[row.key] for r in runs if row.key in r]
        entry: dict[str, Any] = {
            "key": row.key,
            "label": row.label,
            "unit": row.unit,
            "values": values,
            "median": statistics.median(values) if values else None,
            "min": min(values) if values else None,
            "max": max(values) if values else None,
            "baseline": row.baseline,
            "target": row.target,
            "compare": row.compare,
        }
        if row.baseline:
            pairs = [
                (r[row.key], r[row.baseline]) for r in runs if row.key in r and row.baseline in r
            ]
            ratios = [v / b for v, b in pairs if b]
            deltas = [v - b for v, b in pairs]
            entry["ratio"] = statistics.median(ratios) if ratios else None
            entry["delta"] = statistics.median(deltas) if deltas else None
            base_values = [b for _, b in pairs]
            base = statistics.median(base_values) if base_values else None
        else:
            base = None
        if row.target and entry["median"] is not None:
            # Judge the figure the table shows: the median of the run-by-run
            # ratios (or differences), not a ratio of two medians.
            value, against = entry["median"], base
            if row.baseline and "x" in row.target and entry.get("ratio") is not None:
                value, against = entry["ratio"], 1.0
            elif row.baseline and "+" in row.target and entry.get("delta") is not None:
                value, against = entry["delta"], 0.0
            entry["met"] = check_target(row.target, value, against)
        rows.append(entry)
    return rows


def _table_lines(results: list[dict[str, Any]]) -> list[str]:
    header = ["case", "measurement", "median", "min - max", "unit", "vs baseline", "target"]
    body: list[list[str]] = []
    notes: list[str] = []
    for case in results:
        first = True
        for word in ("skipped", "error"):
            if case.get(word):
                notes.append(f"[{len(notes) + 1}] {case['name']}: {case[word]}")
                label = "skipped" if word == "skipped" else "failed"
                body.append([case["name"], f"{label} [{len(notes)}]", "", "", "", "", ""])
        if case.get("skipped") or case.get("error"):
            continue
        for row in case["rows"]:
            vs = ""
            if row.get("baseline"):
                if row.get("compare") == "delta" and row.get("delta") is not None:
                    vs = f"{row['delta']:+.2f} {row['unit']}"
                elif row.get("ratio") is not None:
                    vs = f"{row['ratio']:.2f}x"
            target = row.get("target") or ""
            if target and "met" in row:
                target += {True: " ok", False: " MISSED", None: " ?"}[row["met"]]
            body.append(
                [
                    case["name"] if first else "",
                    row["label"],
                    _fmt(row["median"]),
                    f"{_fmt(row['min'])} - {_fmt(row['max'])}",
                    row["unit"],
                    vs,
                    target,
                ]
            )
            first = False
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    rule = "  ".join("=" * w for w in widths)
    lines = [
        rule,
        "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip(),
        rule,
    ]
    for r in body:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    lines.append(rule)
    if notes:
        lines.extend(["", *notes])
    return lines


def _machine_line(machine: dict[str, Any]) -> str:
    return (
        f"{machine.get('cores')} cores, {machine.get('cpu')}; Python {machine.get('python')};"
        f" PostgreSQL {machine.get('postgresql') or 'n/a'};"
        f" SQLite {machine.get('sqlite') or 'n/a'};"
        f" load average at start {machine.get('load_avg')}"
    )


def update_readme(path: str, report: dict[str, Any]) -> None:
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    start = text.find(README_START)
    end = text.find(README_END)
    if start < 0 or end < start:
        raise SystemExit(f"{path} has no {README_START} / {README_END} markers")
    block = [
        README_START,
        "",
        f"Measured {report['date'][:10]} with ``{report['command']}`` on"
        f" {_machine_line(report['machine'])}.",
        "",
        "::",
        "",
        *("    " + line if line else "" for line in _table_lines(report["cases"])),
        "",
    ]
    new = text[:start] + "\n".join(block) + "\n" + text[end:]
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(new)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Measure sqlnotify against the bare driver on this machine.",
    )
    parser.add_argument("--repeat", type=int, default=5, help="runs of each case (default 5)")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help="run only cases whose name contains NAME (repeatable, or comma-separated)",
    )
    parser.add_argument(
        "--smoke", action="store_true", help="tiny counts, one run, every case; for the tests"
    )
    parser.add_argument(
        "--json",
        default=os.path.join(_env.ROOT, "benchmarks", "results.json"),
        metavar="PATH",
        help="where to write the results (default benchmarks/results.json)",
    )
    parser.add_argument(
        "--update-readme",
        action="store_true",
        help="replace the table in README.rst with this run's",
    )
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    return parser.parse_args(argv)


def _terminated(signum: int, frame: Any) -> None:
    raise SystemExit(f"stopped by signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # Ctrl-C and kill both unwind, so the throwaway schema is dropped.
    signal.signal(signal.SIGTERM, _terminated)
    cases = all_cases()
    if args.list:
        for case in cases:
            print(f"{case.name:22} {case.title}: {case.what}")
        return 0
    wanted = [w for item in args.only for w in item.split(",") if w]
    if wanted:
        cases = [c for c in cases if any(w in c.name for w in wanted)]
        if not cases:
            print(f"no case matches {wanted}", file=sys.stderr)
            return 2
    repeat = 1 if args.smoke else max(1, args.repeat)
    pg_url = _env.pg_url()
    machine = _env.machine()
    needs = {n for c in cases for n in c.needs}
    pg_reason = _env.pg_available(pg_url) if "postgresql" in needs else None
    server = contextlib.ExitStack()
    if pg_reason is not None and "SQLNOTIFY_TEST_POSTGRES_URL" not in os.environ:
        # Nothing answers at the default address: start a throwaway server.
        try:
            pg_url = server.enter_context(_env.throwaway_pg())
        except Exception as exc:
            pg_reason += f"; and no throwaway server: {exc}"
        else:
            pg_reason = None
            print(f"started a throwaway PostgreSQL server at {pg_url}", flush=True)
    if "postgresql" in needs and pg_reason is None:
        machine["postgresql"] = _env.pg_version(pg_url)
    try:
        import sqlite3

        machine["sqlite"] = sqlite3.sqlite_version
    except ImportError:
        pass
    print(_machine_line(machine), flush=True)
    scratch: dict[str, Any] = {}
    results = []
    failed = False
    try:
        for case in cases:
            results.append(_run_case(case, repeat, args.smoke, pg_url, pg_reason, scratch))
            failed = failed or bool(results[-1].get("error"))
    finally:
        from benchmarks import pg_cases, sqlite_cases

        engine = scratch.get("pg_engine")
        if engine is not None:
            engine.dispose()
        pg_cases.close()
        sqlite_cases.close()
        server.close()
    command = "python -m benchmarks" + (" " + " ".join(argv) if argv else "")
    if argv is None:
        command = "python -m benchmarks " + " ".join(sys.argv[1:])
    report = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command.strip(),
        "repeat": repeat,
        "smoke": args.smoke,
        "machine": machine,
        "cases": results,
    }
    print()
    print("\n".join(_table_lines(results)))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(report, fh, indent=2)
        print(f"\nresults written to {args.json}")
    if args.update_readme:
        update_readme(os.path.join(_env.ROOT, "README.rst"), report)
        print("README.rst table updated")
    return 1 if failed else 0


def _sqlite_reason() -> str | None:
    try:
        from sqlnotify.dialects import get_dialect_class

        get_dialect_class("sqlite")
    except Exception as exc:
        return f"this sqlnotify has no SQLite dialect ({exc})"
    return None


def _run_case(
    case: Case,
    repeat: int,
    smoke: bool,
    pg_url: str,
    pg_reason: str | None,
    scratch: dict[str, Any],
) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": case.name, "title": case.title, "what": case.what}
    reason = pg_reason if "postgresql" in case.needs else None
    if reason is None and "sqlite" in case.needs:
        reason = _sqlite_reason()
    if reason is None and case.available is not None:
        reason = case.available()
    if reason:
        print(f"{case.name}: skipped ({reason})", flush=True)
        entry["skipped"] = reason
        return entry
    runs: list[dict[str, float]] = []
    n = repeat if case.max_repeat is None else min(repeat, case.max_repeat)
    started = time.monotonic()
    for i in range(n):
        ctx = Context(smoke=smoke, pg_url=pg_url, run_index=i, scratch=scratch, log=print)
        try:
            values = case.run(ctx)
        except Exception as exc:
            traceback.print_exc()
            lines = str(exc).strip().splitlines() or [""]
            entry["error"] = f"{type(exc).__name__}: {lines[-1][:160]}"
            break
        runs.append(values)
        shown = ", ".join(f"{k}={_fmt(v)}" for k, v in values.items())
        print(f"{case.name} run {i + 1}/{n}: {shown}", flush=True)
    entry["runs"] = runs
    entry["rows"] = summarise(case, runs) if runs else []
    entry["seconds"] = round(time.monotonic() - started, 1)
    return entry
