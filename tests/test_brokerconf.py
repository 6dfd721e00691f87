"""broker.conf line syntax (docs/configuration.md, Line syntax), provenance, plugin.d and warnings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from choria_broker_adapters.config.brokerconf import MAX_LINE_BYTES, Source, parse_text, read_config

SAMPLES = sorted((Path(__file__).parent / "data" / "config" / "samples").glob("*.conf"))


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.stem)
def test_samples_give_the_go_raw_option_map(sample: Path) -> None:
    expected = json.loads(sample.with_suffix(".rawopts.json").read_text())
    raw = read_config(sample, read_plugin_d=False)
    assert raw.values() == expected


def test_samples_exist() -> None:
    assert len(SAMPLES) == 3


# (line as written, expected raw map): docs/configuration.md, Line syntax
EDGE_CASES = [
    ("loglevel = info", {"loglevel": "info"}),
    ("loglevel=info", {"loglevel": "info"}),
    ("   loglevel   =   info   ", {"loglevel": "info"}),
    ("loglevel = info # trailing", {"loglevel": "info # trailing"}),
    ("# comment", {}),
    ("   # indented", {}),
    ("; comment", {}),
    ("; foo = bar", {"; foo": "bar"}),
    ("plugin.choria.adapter.x.stream.servers = ", {}),
    ("plugin.choria.adapter.x.stream.servers =", {}),
    ("key", {}),
    ("a = b = c", {"a": "b = c"}),
    ("a==b", {"a": "=b"}),
    ("=value", {}),
    ("= value", {}),
    ("==value", {"=": "value"}),
    ("my key = v", {"my key": "v"}),
    ('key = "quoted"', {"key": '"quoted"'}),
    ("Plugin.Choria.Adapters = x", {"Plugin.Choria.Adapters": "x"}),
    ("servers = a:4222 ,  b:4222", {"servers": "a:4222 ,  b:4222"}),
    ("key\t=\tvalue\twith\ttabs", {"key": "value\twith\ttabs"}),
    ("key = value\\", {"key": "value\\"}),
    ("[section]", {}),
    ("key\u00a0= v", {"key\u00a0": "v"}),
    ("key\v= v", {"key\v": "v"}),
    ("key = ${HOME}/x", {"key": "${HOME}/x"}),
    ("key = value\r", {"key": "value"}),
    ("\u3000key = value\u3000", {"key": "value"}),
    ("key = value\x1f", {"key": "value\x1f"}),  # Go does not trim U+001F; str.strip() would
]


@pytest.mark.parametrize(("line", "expected"), EDGE_CASES)
def test_line_syntax(line: str, expected: dict[str, str]) -> None:
    options, _ = parse_text(line + "\n", file="broker.conf")
    assert {o.key: o.value for o in options} == expected


def test_crlf_last_duplicate_wins_and_provenance() -> None:
    text = b"a = 1\r\nb = 2\r\na = 3"  # no final LF: the last line is still read
    options, warnings = parse_text(text, file="/etc/choria/broker.conf")
    final = {o.key: o for o in options}
    assert final["a"].value == "3"
    assert final["a"].source == Source("/etc/choria/broker.conf", 3)
    assert final["b"].source.line == 2
    assert [(w.source.line, w.key) for w in warnings if w.source] == [(3, "a")]
    assert "repeats line 1" in warnings[0].message


# (text, line of the warning, words the warning must contain)
WARNINGS = [
    ("a = 1\nnonsense\n", 2, "not a 'key = value' line"),
    ("my key = v\n", 1, "whitespace"),
    ("\ufeffidentity = x\n", 1, "byte order mark"),
    ("; old style = comment\n", 1, "whitespace"),
    ("; comment\n", 1, "';' does not start a comment"),
    ("x = 1\nservers = \n", 2, "empty value"),
    ("=value\n", 1, "not a 'key = value' line"),
]


@pytest.mark.parametrize(("text", "line", "words"), WARNINGS)
def test_malformed_lines_warn_with_file_and_line(text: str, line: int, words: str) -> None:
    _, warnings = parse_text(text, file="b.conf")
    assert any(w.source == Source("b.conf", line) and words in w.message for w in warnings), warnings


def test_bom_is_removed_so_the_first_key_is_read() -> None:
    options, _ = parse_text("\ufeffidentity = x\n".encode(), file="b.conf")
    assert [(o.key, o.value) for o in options] == [("identity", "x")]


def test_over_long_line_stops_reading_like_go_and_warns() -> None:
    text = "a = 1\nb = " + "x" * MAX_LINE_BYTES + "\nc = 3\n"
    options, warnings = parse_text(text, file="b.conf")
    assert [o.key for o in options] == ["a"]
    assert warnings[0].source == Source("b.conf", 2)
    assert "longer than 65535 bytes" in warnings[0].message
    assert "1 line(s) after it" in warnings[0].message


def test_line_of_exactly_the_limit_is_read() -> None:
    line = "b = " + "x" * (MAX_LINE_BYTES - 4)
    options, warnings = parse_text(line + "\n", file="b.conf")
    assert [o.key for o in options] == ["b"] and not warnings


def test_invalid_utf8_warns_and_still_reads() -> None:
    options, warnings = parse_text(b"a = 1\nb = \xff\xfe\n", file="b.conf")
    assert {o.key for o in options} == {"a", "b"}
    assert warnings[0].source == Source("b.conf", 2)
    assert "UTF-8" in warnings[0].message


def test_plugin_d_cfg_files_are_read_after_the_main_file_in_name_order(tmp_path: Path) -> None:
    main = tmp_path / "broker.conf"
    main.write_text("plugin.choria.adapters = a\nplugin.zz.k = main\n")
    plugin_d = tmp_path / "plugin.d"
    plugin_d.mkdir()
    (plugin_d / "choria.cfg").write_text("adapter.a.type = jetstream\nadapters = b\n")
    (plugin_d / "zz.cfg").write_text("k = from-plugin-d\n")
    (plugin_d / "yy.conf").write_text("k = never read\n")
    raw = read_config(main)
    assert raw.values() == {
        "plugin.choria.adapters": "b",
        "plugin.choria.adapter.a.type": "jetstream",
        "plugin.zz.k": "from-plugin-d",
    }
    assert raw.get("plugin.choria.adapters").source == Source(str(plugin_d / "choria.cfg"), 2)
    assert any("yy.conf is not read" in w.message for w in raw.warnings)


@given(st.binary(max_size=2000))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    options, _ = parse_text(data, file="fuzz.conf")
    for option in options:
        assert option.value and option.source.line >= 1
