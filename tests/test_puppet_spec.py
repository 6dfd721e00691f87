"""The module's rspec-puppet specs (puppet/spec): catalog facts a file comparison cannot show,
such as the service resource, its notification from the file, and `ensure => absent`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.puppet,
    pytest.mark.skipif(
        shutil.which("rspec") is None, reason="rspec-puppet is not installed (ruby-rspec-puppet)"
    ),
]


def test_rspec_puppet_specs_pass(tmp_path: Path) -> None:
    result = subprocess.run(
        ["rspec", "-I", "puppet/spec", "puppet/spec/classes"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert " 0 failures" in result.stdout
    assert "0 examples" not in result.stdout
