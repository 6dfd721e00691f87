"""core.servers: the one parser for every server list, credentials kept out of URLs."""

from __future__ import annotations

import pytest

from choria_broker_adapters.core.servers import ServerList, UserInfo, parse_server, parse_servers, redact


@pytest.mark.parametrize(
    ("given", "url", "userinfo"),
    [
        ("broker.example.net:4222", "nats://broker.example.net:4222", None),
        ("127.0.0.1:4222", "nats://127.0.0.1:4222", None),
        ("[::1]:4222", "nats://[::1]:4222", None),
        (" host:1 ", "nats://host:1", None),
        ("nats://broker:4222", "nats://broker:4222", None),
        ("tls://broker:4222", "tls://broker:4222", None),
        ("NATS://broker:4222", "nats://broker:4222", None),
        ("nats://[::1]:4222", "nats://[::1]:4222", None),
        ("nats://user:pw@broker:4222", "nats://broker:4222", UserInfo(user="user", password="pw")),
        ("nats://us%40er:p%3Aw@broker:4222", "nats://broker:4222", UserInfo(user="us@er", password="p:w")),
        ("nats://s3cr3t-token@broker:4222", "nats://broker:4222", UserInfo(token="s3cr3t-token")),
        ("tls://user:@broker:4222", "tls://broker:4222", UserInfo(user="user", password="")),
    ],
)
def test_parse_server_accepts(given: str, url: str, userinfo: UserInfo | None) -> None:
    assert parse_server(given) == (url, userinfo)


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("broker.example.net", "has no port"),
        ("nats://broker", "has no port"),
        ("[::1]", "has no port"),
        ("::1:4222", "not an address"),
        ("[::1:4222", "not an address"),
        ("host:http", "has port 'http'"),
        ("host:70000", "has port '70000'"),
        ("host:0", "has port '0'"),
        (":4222", "not an address"),
        ("http://host:80", "scheme 'http'"),
        ("ws://host:80", "scheme 'ws'"),
        ("nats://host:abc", "has port 'abc'"),
    ],
)
def test_parse_server_rejects_with_a_clear_message(given: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_server(given)
    assert message in str(caught.value)
    assert "expected" in str(caught.value)


@pytest.mark.parametrize(
    "given",
    [
        "nats://user:hunter2@host:http",
        "nats://hunter2@host",
        "ftp://user:hunter2@host:21",
        "nats://a:hunter2@h:1,",
    ],
)
def test_credentials_never_appear_in_server_errors(given: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_servers(given)
    assert "hunter2" not in str(caught.value)


def test_a_list_keeps_urls_apart_from_its_credentials() -> None:
    servers = parse_servers("nats://adapter:pw@a:4222, nats://adapter:pw@b:4222, c:4222")
    assert servers == ("nats://a:4222", "nats://b:4222", "nats://c:4222")
    assert servers.userinfo == UserInfo(user="adapter", password="pw")
    assert "pw" not in repr(servers.userinfo)
    assert parse_servers("a:1").userinfo is None


def test_a_list_with_different_credentials_is_refused() -> None:
    with pytest.raises(ValueError, match="different credentials"):
        parse_servers("nats://a:one@h1:4222, nats://a:two@h2:4222")


@pytest.mark.parametrize("given", ["", "a:1,", "a:1,,b:2"])
def test_a_list_with_an_empty_entry_is_refused(given: str) -> None:
    with pytest.raises(ValueError, match="empty entry"):
        parse_servers(given)


def test_server_list_compares_like_a_tuple() -> None:
    assert ServerList(["nats://a:1"], UserInfo(token="t")) == ("nats://a:1",)
    assert ServerList() == ()
    assert not ServerList()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("nats://user:secret@host:4222", "nats://***@host:4222"),
        ("nats://token@host:4222", "nats://***@host:4222"),
        ("cannot reach tls://a:b@h:1 and nats://t@g:2", "cannot reach tls://***@h:1 and nats://***@g:2"),
        ("nats://host:4222", "nats://host:4222"),
        ("mail user@example.net", "mail user@example.net"),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected
