"""The README documents every configuration key and command the code knows."""

from __future__ import annotations

from pathlib import Path

import pytest

from choria_broker_adapters.cli import _command_modules
from choria_broker_adapters.config.keys import ADAPTER_KEYS, DURATION_KEYS

README = (Path(__file__).parent.parent / "README.md").read_text()


@pytest.mark.parametrize("key", [key.suffix for key in ADAPTER_KEYS], ids=str)
def test_every_adapter_key_is_documented(key: str) -> None:
    assert f"| `{key}` |" in README


@pytest.mark.parametrize("module", _command_modules(), ids=lambda m: m.NAME)
def test_every_command_is_documented(module: object) -> None:
    assert f"| `{module.NAME} " in README or f"| `{module.NAME}`" in README  # type: ignore[attr-defined]


def test_every_duration_key_is_documented() -> None:
    for key in DURATION_KEYS:
        assert key in README


def test_the_two_commands_come_first() -> None:
    head = README.split("## Contents")[0]
    assert "scripts/demo" in head and "scripts/test" in head
    assert "exec scripts/test" in (Path(__file__).parent.parent / ".ci" / "run").read_text()


def test_the_puppet_parity_data_set_count_is_the_tests_own() -> None:
    """The README's number of data sets compared with real `puppet apply` comes from the table."""
    import re

    from tests.test_puppet_render import DATA, VALID_CASES

    documented = re.search(r"real `puppet apply` on (\d+)\s+data sets", README)
    assert documented is not None
    data_sets = {name for name, _ in VALID_CASES}
    assert data_sets == {path.stem for path in DATA.glob("*.yaml")}
    assert int(documented[1]) == len(data_sets)
