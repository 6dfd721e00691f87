"""bench/nodes_bench.py keeps working: one tiny run, its report's shape and counts (no timing)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_tiny_nodes_bench_lists_and_exports_every_node() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / "nodes_bench.py"), "--nodes", "40", "--rounds", "2", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert (report["fill"]["stored_messages"], report["fill"]["node_subjects"]) == (80, 40)
    assert report["nodes_json"]["nodes_listed"] == 40
    assert report["nodes_json"]["method"] == "direct get (multi_last)"
    assert report["export"]["nodes_exported"] == 40
    assert report["nodes_json"]["peak_rss_mb"] > 0
    assert "load average" in report["uptime_before"]
