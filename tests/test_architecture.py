"""The tree shows the architecture: layers import only downwards, and the README's module
table, the module sizes and every document a comment cites agree with the tree."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "choria_broker_adapters"
# Lowest first: a module may import from its own layer and the ones before it.
LAYERS = ("core", "codec", "config", "transport", "jetstream", "adapters", "process", "devtools", "cli")
MAX_MODULE_LINES = 600
MAX_ROOT_MODULES = 6


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            found += [(node.lineno, name) for name in names[:1]]
            if node.module == "choria_broker_adapters":
                found += [(node.lineno, name) for name in names[1:]]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
    return [(line, name) for line, name in found if name.startswith("choria_broker_adapters.")]


def _layer_violations() -> list[str]:
    problems = []
    for path in _modules():
        parts = path.relative_to(PACKAGE).parts
        if len(parts) == 1:
            continue  # entry points at the package root
        layer = parts[0]
        for line, name in _imports(path):
            target = name.split(".")[1]
            if target in LAYERS and LAYERS.index(target) > LAYERS.index(layer):
                problems.append(f"{path.relative_to(ROOT)}:{line}: layer {layer} imports {name}")
    return problems


def test_every_subpackage_is_a_known_layer() -> None:
    packages = {path.parent.relative_to(PACKAGE).parts[0] for path in _modules() if path.parent != PACKAGE}
    assert packages == set(LAYERS)


def test_no_module_imports_from_a_layer_above_it() -> None:
    assert _layer_violations() == []


def test_the_layer_check_can_fail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "choria_broker_adapters"
    (fake / "core").mkdir(parents=True)
    (fake / "core" / "bad.py").write_text("from choria_broker_adapters.cli import main\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert _layer_violations() == [
        "choria_broker_adapters/core/bad.py:1: layer core imports choria_broker_adapters.cli"
    ]


def test_the_package_root_keeps_only_entry_points() -> None:
    root_modules = sorted(path.name for path in PACKAGE.glob("*.py"))
    assert len(root_modules) <= MAX_ROOT_MODULES, root_modules


@pytest.mark.parametrize("path", _modules(), ids=lambda path: str(path.relative_to(PACKAGE)))
def test_no_module_is_over_the_size_limit(path: Path) -> None:
    assert len(path.read_text().splitlines()) <= MAX_MODULE_LINES


def test_readme_module_table_matches_the_tree() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Architecture", 1)[1].split("\n## ", 1)[0]
    first_cells = re.findall(r"^\| (`[^|]*)\|", section, flags=re.M)
    listed = {name for cell in first_cells for name in re.findall(r"`([a-z_/]+[a-z_])`", cell)}
    actual = {
        "/".join(path.relative_to(PACKAGE).with_suffix("").parts)
        for path in _modules()
        if path.parent != PACKAGE and path.name != "__init__.py"
    }
    actual |= {path.parent.relative_to(PACKAGE).as_posix() for path in PACKAGE.glob("*/*/__init__.py")}
    actual -= {name for name in actual if name.count("/") > 1}
    # a subpackage listed as a whole (codec/protocol) stands for its modules
    covered = {name for name in actual if any(name.startswith(entry + "/") for entry in listed)}
    assert sorted(actual - covered - listed) == [], "modules missing from the README table"
    assert sorted(listed - actual) == [], "README rows naming no module"


def test_every_cited_document_is_in_the_repository() -> None:
    cited = set()
    for path in [
        *_modules(),
        *ROOT.glob("tests/*.py"),
        *ROOT.glob("bench/*.py"),
        *ROOT.rglob("puppet/**/*.pp"),
    ]:
        cited |= set(re.findall(r"[A-Za-z0-9_./-]*[A-Za-z0-9_-]+\.md\b", path.read_text()))
    missing = sorted(doc for doc in cited if not list(ROOT.glob(f"**/{Path(doc).name}")))
    assert missing == []
