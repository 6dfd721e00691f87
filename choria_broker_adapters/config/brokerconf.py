"""Read broker.conf (and plugin.d/*.cfg) into raw options that remember where they came from.

The line syntax is the Go Choria broker's (docs/configuration.md): `key = value`, `#`
comments, first usable `=` splits, empty values mean "absent", last duplicate wins. The Go
parser drops everything it does not understand without a word; this one produces the same
raw map for well-formed files and a warning naming file and line for everything else.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from choria_broker_adapters.core.secrets import preview

MAX_LINE_BYTES = 65_535
BOM = "\ufeff"

# Go's unicode.IsSpace set. Python's str.strip() would also remove U+001C-U+001F, which Go keeps.
GO_SPACE = (
    "\t\n\v\f\r \x85\xa0\u1680"
    "\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)

# Go's regexp `\s` (no VT): Python's `\s` would also match VT, so spell the class out.
_KEY_VALUE = re.compile(r"(.+?)[\t\n\f\r ]*=[\t\n\f\r ]*(.+)", re.DOTALL)
_INNER_SPACE = re.compile(r"\s")


@dataclass(frozen=True, slots=True)
class Source:
    """Where a value came from: a file and a 1-based line number."""

    file: str
    line: int

    def __str__(self) -> str:
        # Line 0 stands for the file as a whole (a key that is missing has no line).
        return f"{self.file}:{self.line}" if self.line else self.file


@dataclass(frozen=True, slots=True)
class RawOption:
    key: str
    value: str
    source: Source


@dataclass(frozen=True, slots=True)
class Problem:
    """A warning or error about the configuration, pointing at file, line and key where known."""

    message: str
    source: Source | None = None
    key: str | None = None

    def __str__(self) -> str:
        where = f"{self.source}: " if self.source else ""
        what = f"{self.key}: " if self.key else ""
        return f"{where}{what}{self.message}"

    def as_dict(self) -> dict[str, object]:
        return {
            "file": self.source.file if self.source else None,
            "line": self.source.line if self.source else None,
            "key": self.key,
            "message": self.message,
        }


@dataclass(slots=True)
class RawConfig:
    """The raw option map (key → last value) with provenance, plus parse warnings."""

    options: dict[str, RawOption] = field(default_factory=dict)
    warnings: list[Problem] = field(default_factory=list)

    def get(self, key: str) -> RawOption | None:
        return self.options.get(key)

    def value(self, key: str) -> str | None:
        option = self.options.get(key)
        return option.value if option else None

    def values(self) -> dict[str, str]:
        return {key: option.value for key, option in self.options.items()}

    def merge(self, options: Iterable[RawOption], warnings: Iterable[Problem]) -> None:
        for option in options:
            self.options[option.key] = option
        self.warnings.extend(warnings)


def parse_text(
    data: bytes | str, *, file: str, key_prefix: str = ""
) -> tuple[list[RawOption], list[Problem]]:
    """Parse one file's contents. Pure: no I/O, never raises for any input."""
    warnings: list[Problem] = []
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as error:
            warnings.append(
                Problem(
                    f"file is not valid UTF-8 (byte {error.start}); undecodable bytes were read as U+FFFD",
                    Source(file, data.count(b"\n", 0, error.start) + 1),
                )
            )
            text = data.decode("utf-8", errors="replace")
    else:
        text = data

    options: list[RawOption] = []
    seen: dict[str, int] = {}
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # a final LF ends the last line; it does not start an empty one
    for number, line in enumerate(lines, start=1):
        source = Source(file, number)
        # The Go scanner's limit counts a trailing CR but not the LF.
        if len(line.encode("utf-8", errors="surrogatepass")) > MAX_LINE_BYTES:
            warnings.append(
                Problem(
                    f"line is longer than {MAX_LINE_BYTES} bytes; like the Go broker, this line and the "
                    f"{len(lines) - number} line(s) after it are ignored",
                    source,
                )
            )
            break
        if line.endswith("\r"):
            line = line[:-1]
        if number == 1 and line.startswith(BOM):
            # The Go broker keeps the BOM as part of the first key, so that key silently goes unread.
            warnings.append(
                Problem("byte order mark (BOM) at start of file removed; save the file without it", source)
            )
            line = line[1:]
        stripped = line.strip(GO_SPACE)
        if not stripped or stripped.startswith("#"):
            continue
        match = _KEY_VALUE.match(stripped)
        if not match:
            warnings.append(_unparsable_line(stripped, source))
            continue
        key = key_prefix + match.group(1)
        value = match.group(2)
        if _INNER_SPACE.search(match.group(1)):
            warnings.append(
                Problem("key contains whitespace, so nothing will read it; check the spelling", source, key)
            )
        if key in seen:
            warnings.append(Problem(f"repeats line {seen[key]}; the later value wins", source, key))
        seen[key] = number
        options.append(RawOption(key, value, source))
    return options, warnings


def _unparsable_line(stripped: str, source: Source) -> Problem:
    equals = stripped.find("=", 1)
    if equals != -1:
        key = stripped[:equals].rstrip("\t\n\f\r ")
        return Problem("empty value: the key is treated as absent and its default applies", source, key)
    if stripped.startswith(";"):
        return Problem("';' does not start a comment in broker.conf (use '#'); line ignored", source)
    return Problem(f"not a 'key = value' line, ignored: {preview(stripped)}", source)


def plugin_d_files(main_file: Path) -> tuple[list[Path], list[Problem]]:
    """The plugin.d/*.cfg files the Go broker reads after the main file, in name order."""
    directory = main_file.parent / "plugin.d"
    if not directory.is_dir():
        return [], []
    home = os.environ.get("HOME")
    if home and str(main_file).startswith(home):
        # go-choria#1105: plugin.d is skipped for configuration files under the home directory.
        return [], [
            Problem(f"{directory} is not read because the configuration file is under $HOME ({home})")
        ]
    files: list[Path] = []
    warnings: list[Problem] = []
    for entry in sorted(directory.iterdir(), key=lambda p: p.name):
        if entry.suffix == ".cfg" and entry.is_file():
            files.append(entry)
        elif entry.suffix == ".conf":
            warnings.append(
                Problem(f"{entry} is not read: only plugin.d/*.cfg files are (rename it to {entry.stem}.cfg)")
            )
    return files, warnings


def read_config(path: str | os.PathLike[str], *, read_plugin_d: bool = True) -> RawConfig:
    """Read the main file, then plugin.d/*.cfg beside it; later files win.

    Raises OSError when the main file cannot be read.
    """
    main_file = Path(path).absolute()
    raw = RawConfig()
    raw.merge(*parse_text(main_file.read_bytes(), file=str(main_file)))
    if read_plugin_d:
        files, warnings = plugin_d_files(main_file)
        raw.warnings.extend(warnings)
        for plugin_file in files:
            try:
                data = plugin_file.read_bytes()
            except OSError as error:
                raw.warnings.append(Problem(f"cannot read {plugin_file}: {error.strerror}"))
                continue
            raw.merge(*parse_text(data, file=str(plugin_file), key_prefix=f"plugin.{plugin_file.stem}."))
    return raw
