"""server_list: parsing as omero-py reads hosts, 1-based ids, lookup, validation at load."""

from __future__ import annotations

from typing import Any

import omero
import omero.clients
import omero.constants
import pytest

from auth.omero_errors import UnknownServer
from auth.omero_settings import OmeroSettings
from auth.servers import Server, ServerList
from proxy.config import Problem, build, tomllib

SERVERS = ServerList.from_entries(
    [
        ("omero.example.org", 4064, "main"),
        ("tcp://10.0.0.5:4063", 4064, "lab"),
        ("wss://omero.example.org/omero-ws", 443, ""),
    ]
)


def load(toml: str) -> tuple[Any, list[Problem]]:
    problems: list[Problem] = []
    return build(OmeroSettings, tomllib.loads(toml), "omero", problems), problems


def test_ids_are_one_based_in_list_order() -> None:
    assert [s.id for s in SERVERS] == [1, 2, 3]
    assert SERVERS.get(1).host == "omero.example.org"
    assert SERVERS.get(3).host == "wss://omero.example.org/omero-ws"


def test_lookup_by_decimal_string_id_as_from_a_query_string() -> None:
    assert SERVERS.get("2") is SERVERS.get(2)


def test_lookup_by_name() -> None:
    assert SERVERS.get("lab").id == 2


@pytest.mark.parametrize("ref", [0, 4, -1, "0", "nope", "", True, "Main"])
def test_unknown_id_or_name_raises_unknown_server(ref: Any) -> None:
    with pytest.raises(UnknownServer, match="in server_list"):
        SERVERS.get(ref)


def test_plain_host_is_ssl_on_the_given_port() -> None:
    server = SERVERS.get(1)
    assert (server.protocol, server.port, server.address) == (
        "ssl",
        4064,
        "ssl://omero.example.org:4064",
    )


def test_port_in_url_wins_over_the_entry_port() -> None:
    assert SERVERS.get(2).port == 4063


def test_url_without_port_takes_the_entry_port() -> None:
    assert SERVERS.get(3).port == 443


def test_empty_name_means_no_name_and_the_label_is_the_host() -> None:
    server = SERVERS.get(3)
    assert server.name is None
    assert server.label == "wss://omero.example.org/omero-ws"


@pytest.mark.parametrize(
    ("entry", "protocol", "port"),
    [
        (("omero.example.org", 4064, ""), "ssl", 4064),
        (("192.0.2.10", 14064, ""), "ssl", 14064),
        (("tcp://omero.example.org", 4063, ""), "tcp", 4063),
        (("ssl://omero.example.org:4064", 1, ""), "ssl", 4064),
        (("ws://omero.example.org:80/omero-ws", 4064, ""), "ws", 80),
        (("wss://omero.example.org/omero-ws", 443, ""), "wss", 443),
    ],
)
def test_parsed_port_and_protocol_match_what_omero_py_uses(
    entry: tuple[str, int, str], protocol: str, port: int
) -> None:
    server = ServerList.from_entries([entry]).get(1)
    assert (server.protocol, server.port) == (protocol, port)
    # omero-py's own parser (it needs no client instance): {} for a plain host, which
    # omero-py sends to its default router, Glacier2 over SSL on the given port
    parsed = omero.clients.BaseClient._check_for_hosturl(None, server.host, server.port, None)
    assert (parsed.get("protocol", "ssl"), parsed.get("port", server.port)) == (protocol, port)
    assert "@omero.host@" in omero.constants.DEFAULTROUTER
    assert omero.constants.DEFAULTROUTER.startswith("OMERO.Glacier2/router:ssl ")


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        (
            [("a.example.org", 4064, "a"), ("b.example.org", 0, "b")],
            r"entry \[1\] \(server 2\).*port 0",
        ),
        ([("", 4064, "a")], r"entry \[0\].*empty"),
        ([("bad host", 4064, "a")], r"entry \[0\].*spaces"),
        ([("::1", 4064, "a")], r"entry \[0\].*IPv6"),
        ([("http://omero.example.org", 4064, "a")], r"entry \[0\].*protocol 'http'"),
        ([("tcp://omero.example.org/path", 4064, "a")], r"entry \[0\].*path is only allowed"),
        ([("ssl://omero.example.org:99999", 4064, "a")], r"entry \[0\].*99999"),
        ([("ssl:/omero.example.org", 4064, "a")], r"entry \[0\]"),
        ([("x.example.org", 4064, "12")], r"entry \[0\].*all digits"),
        ([("x.example.org", 4064, "a"), ("x.example.org", 4064, "b")], r"entry \[1\].*same host"),
        ([("x.example.org", 4064, "a"), ("y.example.org", 4064, "a")], r"entry \[1\].*'a' already"),
    ],
)
def test_bad_entry_is_refused_naming_its_index(
    entries: list[tuple[str, int, str]], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        ServerList.from_entries(entries)


def test_omero_web_server_list_json_pastes_into_config_toml() -> None:
    # the value `omero config get omero.web.server_list` prints
    settings, problems = load(
        'server_list = [["omero.example.org", 4064, "omero"], '
        '["wss://omero.example.org/omero-ws", 443, "ws"]]\n'
    )
    assert problems == []
    servers = ServerList.from_entries(settings.server_list)
    assert [(s.id, s.name, s.protocol) for s in servers] == [(1, "omero", "ssl"), (2, "ws", "wss")]


def test_bad_entry_in_config_is_reported_with_its_index() -> None:
    problems: list[Problem] = []
    build(
        OmeroSettings,
        {"server_list": [["a.example.org", 4064, "a"], ["b.example.org", 70000, "b"]]},
        "omero",
        problems,
    )
    assert len(problems) == 1
    assert problems[0].key == "omero.server_list"
    assert "entry [1] (server 2)" in problems[0].message


def test_entry_of_the_wrong_shape_is_reported_with_its_index() -> None:
    problems: list[Problem] = []
    build(OmeroSettings, {"server_list": [["a.example.org", "4064", "a"]]}, "omero", problems)
    assert [p.key for p in problems] == ["omero.server_list[0][1]"]


def test_empty_server_list_is_refused() -> None:
    problems: list[Problem] = []
    build(OmeroSettings, {"server_list": []}, "omero", problems)
    assert "at least one server" in problems[0].message


def test_admin_user_without_password_is_a_problem() -> None:
    problems: list[Problem] = []
    build(OmeroSettings, {"admin_user": "root"}, "omero", problems)
    assert [p.key for p in problems] == ["omero.admin_password"]


def test_admin_password_is_never_shown_in_a_problem() -> None:
    problems: list[Problem] = []
    build(OmeroSettings, {"admin_password": 12345}, "omero", problems)
    assert problems
    assert all("12345" not in str(p) for p in problems)


def test_defaults_are_omero_webs_server_list() -> None:
    servers = ServerList.from_entries(OmeroSettings().server_list)
    assert list(servers) == [Server(1, "localhost", 4064, "omero", "ssl")]
