"""`run.py explain` answers what the running porter does: every row of the decision corpus,
and queries with OMERO credentials, asked of both."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import run
from tests.bypass_corpus import CASES, CORPUS_RULES
from tests.omero_sim.fixture import OmeroSim
from tests.porter_fixtures import PorterFactory, Upstream, write_config
from tests.test_public_gateway import public_sections, raw_request

IMG = "/webgateway/render_image/1/0/0/"
QUERIES = [
    ("GET", IMG + "?bsession=x"),
    ("GET", IMG + "?c=1&%62session=x"),
    ("GET", IMG + "?username=root&password=x"),
    ("GET", IMG + "?server=1"),
    ("GET", IMG + "?server"),
    ("HEAD", IMG + "?bsession=x"),
    ("POST", "/webclient/userdata/?bsession=x"),
    ("GET", IMG + "?c=1|0:255$FF0000&m=c"),
    ("GET", IMG + "?sessionkey=x&users=1"),
    ("GET", "/porter/login?url=/webclient/"),
    ("POST", "/porter/cache/purge"),
    ("GET", "/porter/no-such-page"),
    ("GET", "/webclient/login/?bsession=x"),
]


async def explained(
    config: Path, method: str, target: str, capsys: pytest.CaptureFixture[str]
) -> str:
    """The decision line of `run.py explain` (in a thread: it runs an event loop of its own)."""
    args = ["explain", method, target, "--config", str(config)]
    assert await asyncio.to_thread(run.main, args) == 0
    [decision] = [line for line in capsys.readouterr().out.splitlines() if "decision:" in line]
    return decision.split(":", 1)[1].strip()


async def test_explain_and_the_running_porter_give_every_request_the_same_answer(
    omero_sim: OmeroSim,
    echo_upstream: Upstream,
    porter: PorterFactory,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = write_config(
        tmp_path / "porter.toml",
        {
            "omero": {"server_list": [list(omero_sim.server_list_entry())]},
            "public": {
                "enabled": True,
                "user": "public",
                "password": omero_sim.users["public"],
                "url_filter": CORPUS_RULES.url_filter,
                "deny": list(CORPUS_RULES.deny),
                "rules": [{"methods": list(r.methods), "path": r.path} for r in CORPUS_RULES.rules],
            },
        },
    )
    client = await porter(logged_in=False, sections=public_sections(omero_sim))
    port = client.server.port
    assert port is not None
    differ = []
    rows = [(c.method, c.target) for c in CASES] + QUERIES
    for method, target in rows:
        said = await explained(config, method, target, capsys)
        seen = len(echo_upstream.state.received)
        status, head = await raw_request(client.server.host, port, method, target)
        forwarded = len(echo_upstream.state.received) > seen
        if said.startswith("public"):
            agree = status == 200 and forwarded
        elif said.startswith(("login required", "deny")):
            agree = status in (302, 303) and "Location: /porter/login" in head and not forwarded
        elif said.startswith("bad request"):
            agree = status == 400 and not forwarded
        else:  # porter's own page or prefix: porter answers, OMERO.web never sees it
            agree = said.startswith("porter's") and not forwarded
        if not agree:
            differ.append((method, target, said, status, forwarded))
    assert differ == []
    assert len(rows) >= 100
