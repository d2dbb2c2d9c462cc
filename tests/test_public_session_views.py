"""OMERO.web views that write the Django session are never public: all anonymous visitors
share one Django session, so one visitor's write would be read back by the others.

The list is pinned against the installed omero-web: its views are scanned for session writes
(directly or through a helper), each one must be classified here, and each denied one's URL
is resolved by OMERO.web's own Django URL resolver and decided "deny" by porter.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import omeroweb

from auth.public_settings import PublicSessionSettings
from filters.rules import PublicRules, decide
from filters.settings import PublicRuleSettings
from tests.gateway_fixtures import GatewayFactory, cookieless_get
from tests.omero_sim.fixture import OmeroSim
from tests.web_fixture import OmeroWeb

OMEROWEB = Path(omeroweb.__file__).parent
SCANNED = ["webgateway/views.py", "webclient/views.py", "webclient/controller/container.py"]

# Views that store what a request asks for: never public (filters.rules.SESSION_WRITERS).
# Each with URLs OMERO.web routes to it (url_name as Django resolves it).
DENIED: dict[str, list[tuple[str, str]]] = {
    "copy_image_rdef_json": [
        ("/webgateway/copyImgRDef/", "webgateway_copy_image_rdef_json"),
        ("/webclient/copyImgRDef/", "copy_image_rdef_json"),
        ("/webclient/12/copyImgRDef/", "copy_image_rdef_json"),
    ],
    "switch_active_group": [("/webclient/active_group/", "change_active_group")],
    "activities": [
        ("/webclient/activities/", "activities"),
        ("/webclient/activities_json/", "activities_json"),
    ],
    "activities_update": [
        ("/webclient/activities_update/", "activities_update"),
        ("/webclient/activities_update/clean/", "activities_update"),
    ],
    "chgrp": [("/webclient/chgrp/", "chgrp")],
    "chown": [("/webclient/chown/", "chown")],
    "manage_action_containers": [("/webclient/action/delete/image/1/", "manage_action_containers")],
    "run_script": [
        ("/webclient/script_run/3/", "script_run"),
        ("/webclient/figure_script/SplitView/", "figure_script"),
        ("/webclient/ome_tiff_script/7/", "ome_tiff_script"),
    ],
    "update_callback": [],  # a helper of the script views above
}
# Writers that stay public, and why.
KEPT = {
    # user_id: whose data the tree opens on (from ?experimenter or ?show); it never widens
    # what the public user may see, and public webclient sites need these pages.
    "_load_template",
    # the public user's list of scripts: the same for every visitor
    "list_scripts",
}
# Login and logout: porter takes these URLs over, OMERO.web never sees them.
TAKEN_OVER = {"handle_logged_in", "logout"}


def _writes_session(function: ast.AST) -> bool:
    for node in ast.walk(function):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign | ast.Delete):
            targets = list(node.targets)
        elif isinstance(node, ast.AugAssign):
            targets = [node.target]
        if any("request.session" in ast.unparse(t) for t in targets):
            return True
        if isinstance(node, ast.Call):
            called = ast.unparse(node.func)
            if called.startswith("request.session.") and called.rsplit(".", 1)[1] in (
                "flush",
                "update",
                "pop",
                "setdefault",
                "clear",
                "cycle_key",
            ):
                return True
    return False


def _session_writers() -> set[str]:
    """Functions of the scanned modules that write request.session (not the decorators'
    per-user bookkeeping, which is the same for every anonymous visitor)."""
    found: set[str] = set()
    for name in SCANNED:
        tree = ast.parse((OMEROWEB / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and _writes_session(node):
                found.add(node.name)
    return found


def test_every_session_writing_view_of_omero_web_is_classified() -> None:
    writers = _session_writers()
    # An omero-web upgrade that adds a writer fails here until it is classified.
    assert writers == set(DENIED) | KEPT | TAKEN_OVER


def test_every_url_of_a_session_writing_view_is_denied_to_the_public() -> None:
    # even with url_filter making all of OMERO.web public
    rules = PublicRules.from_settings(PublicRuleSettings(enabled=True, url_filter="^/.*"))
    for view, urls in DENIED.items():
        for path, _ in urls:
            for method in ("GET", "POST"):
                decision = decide(method, path, rules)
                assert decision.kind == "deny", (view, path, method)
                assert "writes the shared session" in decision.rule


def test_the_denied_urls_are_the_ones_omero_web_routes_to_those_views(
    omero_web: OmeroWeb,
) -> None:
    paths = [path for urls in DENIED.values() for path, _ in urls]
    script = (
        "import json, sys, django; django.setup();"
        "from django.urls import resolve;"
        "print(json.dumps([resolve(p).url_name for p in json.loads(sys.argv[1])]))"
    )
    env = {**os.environ, "OMERODIR": str(omero_web.omerodir)}
    env["DJANGO_SETTINGS_MODULE"] = "omeroweb.settings"
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(paths)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    resolved = json.loads(done.stdout.strip().splitlines()[-1])
    expected = [name for urls in DENIED.values() for _, name in urls]
    assert resolved == expected


def _public(sim: OmeroSim) -> Any:
    return {
        "public": PublicRuleSettings(enabled=True, url_filter=r"^/webgateway/.*"),
        "public_session": PublicSessionSettings(
            enabled=True, user="public", password=sim.users["public"]
        ),
    }


async def test_one_visitors_copied_rendering_settings_never_reach_another(
    gateway: GatewayFactory, omero_sim: OmeroSim
) -> None:
    client = await gateway(sections=_public(omero_sim))
    status, body = await cookieless_get(client, "/webgateway/getImgRDef/")
    assert (status, json.loads(body)) == (200, {"rdef": None})
    copy = "/webgateway/copyImgRDef/?c=1|0:255$FF0000&imageId=1&m=c"
    status, _ = await cookieless_get(client, copy)
    assert status == 302  # not public: an anonymous visitor is sent to log in
    status, body = await cookieless_get(client, "/webgateway/getImgRDef/")
    assert (status, json.loads(body)) == (200, {"rdef": None})  # not the other visitor's
