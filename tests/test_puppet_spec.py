"""The module's rspec-puppet specs (puppet/spec): catalog facts a file comparison cannot show,
such as the service resource, its notification from the file, `ensure => absent`, the install
class's commands and guards, the protocol v2 provider and the unit's hardening lines."""

from __future__ import annotations

import re
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
    # "40 examples, 0 failures": some examples ran, none failed.
    summary = re.search(r"\b([0-9]+) examples?, ([0-9]+) failures?", result.stdout)
    assert summary is not None, result.stdout
    assert int(summary.group(1)) > 0 and summary.group(2) == "0"
