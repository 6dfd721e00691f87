"""The Puppet module is clean under puppet-lint, `puppet parser validate` and `puppet epp validate`
(what scripts/test runs, here so a plain pytest run sees it too)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MODULE = REPO / "puppet"
MANIFESTS = sorted(str(path) for folder in ("manifests", "types") for path in (MODULE / folder).rglob("*.pp"))

pytestmark = [
    pytest.mark.puppet,
    pytest.mark.skipif(shutil.which("puppet") is None, reason="puppet is not installed (scripts/setup)"),
]


def run(command: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8"},
    )


@pytest.mark.skipif(shutil.which("puppet-lint") is None, reason="puppet-lint is not installed")
def test_puppet_lint_is_clean(tmp_path: Path) -> None:
    result = run(
        ["puppet-lint", "--relative", "--fail-on-warnings", "puppet/manifests", "puppet/types"], tmp_path
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_manifests_and_templates_parse(tmp_path: Path) -> None:
    parser = run(["puppet", "parser", "validate", *MANIFESTS], tmp_path)
    assert (parser.returncode, parser.stdout + parser.stderr) == (0, "")
    templates = sorted(str(path) for path in (MODULE / "templates").glob("*.epp"))
    epp = run(["puppet", "epp", "validate", *templates], tmp_path)
    assert (epp.returncode, epp.stdout + epp.stderr) == (0, "")
