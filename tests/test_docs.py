"""The documents in docs/ keep up with the code: every key of the key table is in
docs/configuration.md with its default, every drop reason and exported series is in
docs/metrics.md, and every citation of a section of a document in docs/ names a heading that
exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from choria_broker_adapters.adapters.counters import DROP_REASONS
from choria_broker_adapters.config.keys import ADAPTER_KEYS, PROCESS_KEYS, AdapterKey, ProcessKey
from choria_broker_adapters.core.durations import format_duration

ROOT = Path(__file__).parent.parent
DOCS = ROOT / "docs"
CONFIGURATION = (DOCS / "configuration.md").read_text()


def _section(text: str, heading: str) -> str:
    """The body of the `## heading` section (up to the next heading of level 2)."""
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def _row(section: str, key: str) -> str:
    rows = [line for line in section.splitlines() if line.startswith(f"| `{key}` |")]
    assert len(rows) == 1, f"expected one table row for `{key}`, found {len(rows)}"
    return rows[0]


def _default_shown(key: AdapterKey | ProcessKey) -> str | None:
    """The default as the table writes it, or None when it is required, derived or empty."""
    if key.default is None or key.default == ():
        return None
    if key.is_duration:
        return f"`{format_duration(key.default)}`"
    return f"`{key.default}`"


@pytest.mark.parametrize("key", ADAPTER_KEYS, ids=lambda key: key.suffix)
def test_every_adapter_key_has_a_row_with_its_default(key: AdapterKey) -> None:
    row = _row(_section(CONFIGURATION, "Adapter keys"), key.suffix)
    default = _default_shown(key)
    if default is not None:
        assert row.split("|")[2].strip().startswith(default), row


@pytest.mark.parametrize("key", PROCESS_KEYS, ids=lambda key: key.key)
def test_every_process_key_has_a_row_with_its_default(key: ProcessKey) -> None:
    row = _row(_section(CONFIGURATION, "Process keys"), key.key)
    default = _default_shown(key)
    if default is not None:
        assert row.split("|")[2].strip().startswith(default), row
    if key.env:
        assert key.env in row


def _headings(document: Path) -> set[str]:
    return {
        line.lstrip("#").strip() for line in document.read_text().splitlines() if re.match(r"#{1,6} ", line)
    }


def _section_citations() -> list[tuple[str, str, str]]:
    """(file:line, document, section) for every "docs/<document>, <Section>" in code and tests."""
    found = []
    pattern = re.compile(r"docs/([a-z0-9-]+\.md), ([A-Z][A-Za-z0-9 /'-]*[A-Za-z0-9])")
    for folder in ("choria_broker_adapters", "tests", "bench"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for number, line in enumerate(path.read_text().splitlines(), start=1):
                for match in pattern.finditer(line):
                    found.append((f"{path.relative_to(ROOT)}:{number}", match.group(1), match.group(2)))
    return found


def test_section_citations_name_existing_headings() -> None:
    citations = _section_citations()
    assert citations, "no section citation found: the pattern no longer matches"
    missing = [
        f"{where}: docs/{document}, {section}"
        for where, document, section in citations
        if not (DOCS / document).is_file() or section not in _headings(DOCS / document)
    ]
    assert not missing, "citations of sections that do not exist:\n" + "\n".join(missing)


METRICS = (DOCS / "metrics.md").read_text()


@pytest.mark.parametrize("reason", DROP_REASONS)
def test_every_drop_reason_is_explained(reason: str) -> None:
    _row(_section(METRICS, "Drop reasons"), reason)


def test_every_exported_series_is_documented() -> None:
    from choria_broker_adapters.process.stats import Metrics

    metrics = Metrics("docs.example.net")
    metrics.worker("a.0", "input")
    metrics.adapter("a")
    for gauge in metrics.gauges():
        gauge.labels("a", "docs.example.net").set(0)
    names = re.findall(r"^# TYPE (\S+) ", metrics.exposition().decode(), re.MULTILINE)
    assert len(names) > 10
    missing = [name for name in names if f"`{name}`" not in METRICS]
    assert not missing, f"series not in docs/metrics.md: {missing}"
