"""proxy/answers.py: porter's own answers: error pages, redirects, "please log in"."""

from __future__ import annotations

from tests.porter_fixtures import PorterFactory, Upstream


async def test_browsers_get_a_page_and_scripts_get_json_with_the_request_id(
    echo_upstream: Upstream, porter: PorterFactory
) -> None:
    client = await porter()
    page = await client.get("/porter/nothing-here", headers={"Accept": "text/html"})
    assert page.status == 404
    assert page.content_type == "text/html"
    assert page.headers["X-Request-Id"] in await page.text()
    assert page.headers["Cache-Control"] == "no-store"
    for headers in ({"X-Requested-With": "XMLHttpRequest"}, {"Accept": "application/json"}):
        resp = await client.get("/porter/nothing-here", headers=headers)
        body = await resp.json()
        assert body == {
            "error": "There is nothing at this address.",
            "status": 404,
            "request_id": resp.headers["X-Request-Id"],
        }


async def test_login_required_sends_browsers_to_login_with_their_url_and_ajax_a_403(
    echo_upstream: Upstream, porter: PorterFactory
) -> None:
    client = await porter(logged_in=False, prefix="/omero")
    resp = await client.get("/omero/webclient/?show=image-1", allow_redirects=False)
    assert resp.status == 302
    assert (
        resp.headers["Location"]
        == "/omero/porter/login?url=%2Fomero%2Fwebclient%2F%3Fshow%3Dimage-1"
    )
    post = await client.post("/omero/webclient/x/", allow_redirects=False)
    assert post.headers["Location"] == "/omero/porter/login"  # no url for a POST
    ajax = await client.get("/omero/webclient/", headers={"X-Requested-With": "XMLHttpRequest"})
    assert ajax.status == 403
    assert echo_upstream.state.received == []
