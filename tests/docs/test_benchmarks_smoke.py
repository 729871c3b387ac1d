"""The benchmark suite runs end to end with tiny counts, so it never rots.

No figure is checked: the machine running the tests is shared and busy.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def benchmarks(
    *args: str, timeout: float, check: bool = False, **env: str
) -> subprocess.CompletedProcess[str]:
    """``python -m benchmarks ARGS`` from the repository root, this checkout first on the path."""
    full_env = dict(os.environ, **env)
    full_env["PYTHONPATH"] = str(ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-m", "benchmarks", *args],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=check,
    )


@pytest.mark.slow
@pytest.mark.postgresql
@pytest.mark.timeout(300)  # the bound of the subprocess below
def test_every_case_runs_in_smoke_mode(tmp_path: Path, pg_url: str) -> None:
    from benchmarks.runner import all_cases

    out = tmp_path / "results.json"
    public_before = _public_relations(pg_url)
    proc = benchmarks(
        "--smoke", "--json", str(out), timeout=300, SQLNOTIFY_TEST_POSTGRES_URL=pg_url
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["smoke"] is True
    by_name = {case["name"]: case for case in report["cases"]}
    assert set(by_name) == {case.name for case in all_cases()}
    for name, case in by_name.items():
        assert not case.get("error"), f"{name}: {case['error']}"
        if case.get("skipped"):
            continue  # an optional dependency is missing; the reason is recorded
        assert case["runs"], name
        expected = {row.key for row in next(c for c in all_cases() if c.name == name).rows}
        assert expected <= set(case["runs"][0]), f"{name} lacks {expected - set(case['runs'][0])}"
    assert "pg_throughput" in proc.stdout  # the table went to the terminal
    # Every case works in its own schema: nothing of the run lands in public.
    assert _public_relations(pg_url) - public_before == set()


def _public_relations(pg_url: str) -> set[tuple[int, str]]:
    """The sqlnotify relations in the ``public`` schema, by oid and name."""
    import sqlalchemy as sa

    engine = sa.create_engine(pg_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT oid::bigint, relname FROM pg_class"
                " WHERE relnamespace = 'public'::regnamespace AND relname LIKE 'sqlnotify%%'"
            ).all()
    finally:
        engine.dispose()
    return {(int(oid), str(name)) for oid, name in rows}


def test_only_filter_and_list(tmp_path: Path) -> None:
    listing = benchmarks("--list", timeout=60, check=True)
    assert "pg_throughput" in listing.stdout
    unknown = benchmarks("--only", "no_such_case", timeout=60)
    assert unknown.returncode == 2
    assert "no case matches" in unknown.stderr
