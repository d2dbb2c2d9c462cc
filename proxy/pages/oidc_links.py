"""Porter's OpenID URLs, shared by the login page and the OpenID pages: where a login starts,
where the provider sends the browser back, and where a logout goes on to."""

from __future__ import annotations

from aiohttp import web
from yarl import URL

from auth.oidc import OidcError
from auth.sessions import SessionRecord
from proxy.keys import OIDC_PROVIDERS, SCOPE, SETTINGS

KIND_PREFIX = "oidc:"  # a porter session's kind: "oidc:<provider id>"


def _prefix(request: web.Request) -> str:
    return request.app[SETTINGS].proxy.prefix


def base_url(request: web.Request) -> str:
    """Porter's public origin and prefix: `[oidc] public_url`, else the request's own."""
    configured = request.app[SETTINGS].oidc.public_url
    if configured:
        return configured.rstrip("/") + _prefix(request)
    client = request[SCOPE].client
    return f"{client.scheme}://{client.host}{_prefix(request)}"


SHARED_CALLBACK = "/porter/oidc/callback"  # before per-provider URLs; `shared_callback`


def callback_path(request: web.Request, provider: str) -> str:
    """Where `provider` sends the browser back (below the prefix): a URL of its own, so a
    code can only come back to the provider whose login the browser started (mix-up)."""
    if request.app[SETTINGS].oidc.shared_callback == provider:
        return SHARED_CALLBACK
    return f"/porter/oidc/{provider}/callback"


def callback_url(request: web.Request, provider: str) -> str:
    return base_url(request) + callback_path(request, provider)


def login_url(request: web.Request, provider: str, target: str | None) -> str:
    """Porter's URL that starts a login with `provider` (relative)."""
    url = URL(f"{_prefix(request)}/porter/oidc/{provider}/login")
    return str(url.with_query(url=target)) if target else str(url)


def switch_url(request: web.Request, provider: str, target: str | None) -> str:
    """Porter's "Log in as someone else" for `provider` (relative): out of the provider's
    session, then a fresh login there that must ask who the user is."""
    url = URL(f"{_prefix(request)}/porter/oidc/{provider}/switch")
    return str(url.with_query(url=target)) if target else str(url)


RELOGIN = "/porter/oidc/{provider}/relogin"  # the post-logout URL of an account switch


def relogin_url(request: web.Request, provider: str) -> str:
    return base_url(request) + RELOGIN.format(provider=provider)


def provider_of(record: SessionRecord) -> str | None:
    return record.kind[len(KIND_PREFIX) :] if record.kind.startswith(KIND_PREFIX) else None


async def end_session_location(request: web.Request, record: SessionRecord) -> str | None:
    """Where the browser goes after porter's logout of an OpenID session (the provider's
    end_session_endpoint), or None (porter's own page)."""
    provider = request.app.get(OIDC_PROVIDERS, {}).get(provider_of(record) or "")
    if provider is None:
        return None
    try:
        found = await provider.discovery()
    except OidcError:
        return None  # logged out of porter and OMERO all the same
    return provider.end_session_url(found, base_url(request) + "/porter/login?logged_out=1")


async def sessionless_logout(request: web.Request) -> str | None:
    """Where /porter/logout sends a browser with no porter session on a site with OpenID
    providers (the one configured, or `?provider=`): out of the provider's session as well,
    which is what such a visitor is after (a refused user, or one whose porter session ended).
    A site without password logins comes back to a login that asks who the user is (the
    account switch); one with them, to porter's login page. None: nothing to do there."""
    held = request.app.get(OIDC_PROVIDERS) or {}
    named = request.query.get("provider") or (next(iter(held)) if len(held) == 1 else "")
    provider = held.get(named)
    if provider is None:
        return None
    if not request.app[SETTINGS].login.password_login:
        return switch_url(request, provider.id, None)
    try:
        found = await provider.discovery()
    except OidcError:
        return None
    return provider.end_session_url(found, base_url(request) + "/porter/login?logged_out=1")
