"""OMERO.web's query credentials never reach OMERO.web: the public-session hijack, the one-link
account switch and unthrottled password guessing, with real OMERO.web and the OMERO test
server; and the parameter list pinned against the installed omero-web."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import omeroweb
import pytest

from auth.public_settings import PublicSessionSettings
from filters.credentials import OMERO_WEB_CREDENTIAL_PARAMS, credential_params
from filters.settings import PublicRuleSettings
from tests.gateway_fixtures import GatewayFactory, cookieless_get, log_in
from tests.omero_sim.fixture import OmeroSim

PING = "/webclient/keepalive_ping/"


def _get_keys_read(source: str) -> set[str]:
    """Every constant key read from request.GET: GET["k"], GET.get("k"), "k" in GET."""
    keys: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Subscript)
            and ast.unparse(node.value) == "request.GET"
            and isinstance(node.slice, ast.Constant)
        ):
            keys.add(str(node.slice.value))
        elif isinstance(node, ast.Call) and ast.unparse(node.func) == "request.GET.get":
            if node.args and isinstance(node.args[0], ast.Constant):
                keys.add(str(node.args[0].value))
        elif (
            isinstance(node, ast.Compare)
            and isinstance(node.ops[0], ast.In)
            and ast.unparse(node.comparators[0]) == "request.GET"
            and isinstance(node.left, ast.Constant)
        ):
            keys.add(str(node.left.value))
    return keys


def test_the_refused_names_are_exactly_what_omero_webs_login_decorator_reads() -> None:
    source = (Path(omeroweb.__file__).parent / "decorators.py").read_text()
    tree = ast.parse(source)
    login_required = next(
        n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == "login_required"
    )
    connection_methods = [
        n
        for n in login_required.body
        if isinstance(n, ast.FunctionDef)
        and n.name in ("get_connection", "get_authenticated_connection")
    ]
    assert len(connection_methods) == 2
    read = set().union(*(_get_keys_read(ast.unparse(m)) for m in connection_methods))
    # An omero-web upgrade that reads one more credential from the query fails here.
    assert read == OMERO_WEB_CREDENTIAL_PARAMS


@pytest.mark.parametrize(
    ("query", "found"),
    [
        ("", []),
        ("id=1&tile=0,1,2", []),
        ("username=alice&password=x", ["password", "username"]),
        ("bsession=abc&server=1", ["bsession", "server"]),
        ("bsession", ["bsession"]),  # no "=": Django keeps it with an empty value
        ("%62session=abc", ["bsession"]),  # decoded as Django decodes it
        ("user%6Eame=alice", ["username"]),
        ("a=1&password=&a=2", ["password"]),
        ("x=username&y=bsession", []),  # values are not names
        ("Username=alice", []),  # Django's QueryDict is case-sensitive
        ("usernames=alice&my_password=x", []),
    ],
)
def test_credential_names_are_found_as_django_decodes_them(query: str, found: list[str]) -> None:
    assert credential_params(query) == found


def _public(sim: OmeroSim, url_filter: str = r"^/(webgateway|webclient/keepalive_ping)/") -> Any:
    return {
        "public": PublicRuleSettings(enabled=True, url_filter=url_filter),
        "public_session": PublicSessionSettings(
            enabled=True, user="public", password=sim.users["public"]
        ),
    }


def _users_with_sessions(sim: OmeroSim) -> set[str]:
    return {s["user"] for s in sim.sessions()}


async def test_query_credentials_cannot_switch_the_shared_public_session(
    gateway: GatewayFactory, omero_sim: OmeroSim
) -> None:
    client = await gateway(sections=_public(omero_sim))
    assert await cookieless_get(client, PING) == (200, "OK")  # the public session exists
    public_key = next(s["key"] for s in omero_sim.sessions() if s["user"] == "public")
    # alice logged in elsewhere: her key is what an attacker would replay with bsession
    alice = await gateway(sections=_public(omero_sim))
    assert (await log_in(alice, "alice", omero_sim.users["alice"])).status == 303
    alice_key = next(s["key"] for s in omero_sim.sessions() if s["user"] == "alice")
    before = omero_sim.stats()

    attacks = [
        f"{PING}?username=alice&password={omero_sim.users['alice']}",
        f"/webgateway/get_thumbnails/?id=1&username=alice&password={omero_sim.users['alice']}",
        f"{PING}?bsession={alice_key}",
        f"{PING}?bsession={alice_key}&server=1",
        f"{PING}?%62session={alice_key}",
        f"{PING}?server=1",
    ]
    for path in attacks:
        status, body = await cookieless_get(client, path)
        assert status == 400, path
        assert "bsession" in body
        assert alice_key not in body

    after = omero_sim.stats()
    for counter in ("sessions_created", "logins", "login_failures", "joins", "join_failures"):
        assert after[counter] == before[counter], counter  # nothing reached OMERO
    # every later anonymous visitor is still the public user, on the same one session
    for _ in range(3):
        assert await cookieless_get(client, PING) == (200, "OK")
    public = omero_sim.session(public_key)
    assert public is not None
    assert public["user"] == "public"
    assert omero_sim.stats()["sessions_created"] == before["sessions_created"]


async def test_query_passwords_cannot_be_guessed_past_the_throttle(
    gateway: GatewayFactory, omero_sim: OmeroSim
) -> None:
    client = await gateway(sections=_public(omero_sim))
    before = omero_sim.stats()
    answers = {
        (await cookieless_get(client, f"{PING}?username=alice&password=guess-{n}"))[0]
        for n in range(12)
    }
    assert answers == {400}  # the same answer, right or wrong: nothing to tell them apart
    after = omero_sim.stats()
    assert after["login_failures"] == before["login_failures"]
    assert after["sessions_created"] == before["sessions_created"]  # not one per attempt


async def test_one_link_cannot_switch_a_logged_in_user_to_another_account(
    gateway: GatewayFactory, omero_sim: OmeroSim
) -> None:
    client = await gateway()
    assert (await log_in(client, "bob", omero_sim.users["bob"])).status == 303
    assert (await client.get(PING)).status == 200
    before = omero_sim.stats()
    link = f"{PING}?username=alice&password={omero_sim.users['alice']}"
    resp = await client.get(link, allow_redirects=False)  # a top-level GET: Lax sends the cookie
    assert resp.status == 400
    assert omero_sim.stats()["sessions_created"] == before["sessions_created"]
    assert "alice" not in _users_with_sessions(omero_sim)
    # bob is still bob: his next requests join bob's OMERO session, and only his
    bob_key = next(s["key"] for s in omero_sim.sessions() if s["user"] == "bob")
    joins = omero_sim.session(bob_key)["joins"]  # type: ignore[index]
    resp = await client.get(PING)
    assert (resp.status, await resp.text()) == (200, "OK")
    assert omero_sim.session(bob_key)["joins"] > joins  # type: ignore[index]


async def test_token_users_cannot_send_query_credentials_either(
    gateway: GatewayFactory, omero_sim: OmeroSim
) -> None:
    client = await gateway(sections=_public(omero_sim))
    resp = await client.get(
        f"{PING}?bsession=x", headers={"Authorization": "Bearer not-even-verified"}
    )
    assert resp.status == 400  # refused before anyone is identified


@pytest.mark.parametrize("app_name", ["webclient", "webadmin"])
async def test_omero_webs_password_forms_are_porters_login_page(
    gateway: GatewayFactory, omero_sim: OmeroSim, app_name: str
) -> None:
    client = await gateway()
    assert (await log_in(client, "bob", omero_sim.users["bob"])).status == 303
    before = omero_sim.stats()
    resp = await client.post(
        f"/{app_name}/login/",
        data={"username": "alice", "password": omero_sim.users["alice"], "server": "1"},
        allow_redirects=False,
    )
    assert resp.status == 303
    assert resp.headers["Location"].startswith("/porter/login")
    assert omero_sim.stats()["logins"] == before["logins"]  # the password never reached OMERO
