"""OpenID Connect: one configured provider at run time, and the sealed pre-login state.

`OidcProvider` reads the issuer's discovery document (at start-up, then cached; refetched
after an hour, or after a failure at most every `RETRY` seconds), checks that it names the
configured issuer, exchanges authorization codes at its token endpoint (PKCE S256, the
client secret in HTTP Basic), and verifies ID tokens and back-channel logout tokens with the
provider's JWKS through porter's own verifier (algorithms pinned per provider, never none,
never an HMAC).

`PreLoginSealer` seals what a login in progress must remember (state, nonce, PKCE verifier,
provider, target) into one cookie: AES-GCM with a key derived from `proxy.secret_key`, so
the browser can neither read nor change it, and any porter process with the same secret can
finish the login. Nothing about a login in progress is kept in process memory.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import aiohttp
import jwt
from aiohttp import hdrs
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from multidict import istr
from yarl import URL

from auth.jwks import PrivateKey, describe_failure, load_pem_private_key_file, read_limited
from auth.jwt_verify import (
    JwtVerifier,
    SsoError,
    TokenRejected,
    VerifiedToken,
    trusted_issuer_from_settings,
)
from auth.oidc_settings import OidcProviderSettings, OidcSettings
from auth.single_flight import SingleFlight
from auth.sso_settings import SsoSettings

log = logging.getLogger("porter.oidc")

PRELOGIN_COOKIE = "porter_oidc"  # the sealed pre-login state; porter's, never forwarded
RELOGIN_COOKIE = "porter_relogin"  # where an account switch lands; porter's, never forwarded
BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"
MAX_DOCUMENT = 256 * 1024  # discovery document and token response
REFRESH = 3600.0  # seconds a discovery document is used
RETRY = 10.0  # seconds between two discovery attempts after a failure
LOGOUT_TOKEN_MAX_AGE = 300  # seconds: an older logout token (by iat) is refused
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
NO_BACKCHANNEL = (
    "it does not support back-channel logout (backchannel_logout_supported is not true in "
    "its discovery document): a logout at the provider leaves porter's sessions of its users "
    "until porter's idle timeout"
)


@dataclass(frozen=True)
class TokenAnswer:
    """What porter keeps of a token endpoint's answer (never logged, never forwarded)."""

    id_token: str
    access_token: str | None


class OidcError(SsoError):
    """An OpenID login or logout step that failed; `status` is what the browser gets.

    Reasons: provider_unavailable (503), bad_state (400), login_expired (400),
    provider_denied (403, the provider said access_denied), exchange_failed (401: the code
    was refused, e.g. replayed), bad_id_token (401), no_id_token (401), wrong_party (401:
    azp names another client), bad_nonce (401), bad_userinfo (502), bad_logout_token (400),
    replayed (400).
    """


@dataclass(frozen=True)
class Discovery:
    """The parts of a provider's discovery document porter uses."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    end_session_endpoint: str | None
    userinfo_endpoint: str | None
    backchannel_logout: bool
    iss_parameter: bool  # RFC 9207: it names itself in every authorization response


def parse_discovery(data: bytes, expected_issuer: str) -> Discovery:
    """The document's endpoints; ValueError naming what is wrong."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise ValueError("the discovery document is not JSON") from None
    if not isinstance(doc, dict):
        raise ValueError("the discovery document is not a JSON object")
    if doc.get("issuer") != expected_issuer:
        # OpenID Connect Discovery 1.0, 4.3: it MUST be exactly the configured issuer
        raise ValueError(
            f"the discovery document names issuer {doc.get('issuer')!r}, not {expected_issuer!r}"
        )
    found: dict[str, str] = {}
    for name in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
        value = doc.get(name)
        if not isinstance(value, str) or not _web_url(value):
            raise ValueError(f"the discovery document has no usable {name}")
        found[name] = value
    end = doc.get("end_session_endpoint")
    userinfo = doc.get("userinfo_endpoint")
    methods = doc.get("code_challenge_methods_supported")
    if isinstance(methods, list) and "S256" not in methods:
        raise ValueError("the provider does not support PKCE with S256")
    return Discovery(
        issuer=expected_issuer,
        authorization_endpoint=found["authorization_endpoint"],
        token_endpoint=found["token_endpoint"],
        jwks_uri=found["jwks_uri"],
        end_session_endpoint=end if isinstance(end, str) and _web_url(end) else None,
        userinfo_endpoint=userinfo if isinstance(userinfo, str) and _web_url(userinfo) else None,
        backchannel_logout=doc.get("backchannel_logout_supported") is True,
        iss_parameter=doc.get("authorization_response_iss_parameter_supported") is True,
    )


def _web_url(value: str) -> bool:
    try:
        url = URL(value)
    except (ValueError, TypeError):
        return False
    return url.scheme in ("https", "http") and bool(url.host) and url.user is None


def pkce_challenge(verifier: str) -> str:
    """RFC 7636 S256: BASE64URL(SHA256(verifier)) without padding."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class OidcProvider:
    """One `[[oidc.providers]]` entry at run time."""

    def __init__(
        self,
        settings: OidcProviderSettings,
        oidc: OidcSettings,
        sso: SsoSettings,
        session: Callable[[], aiohttp.ClientSession],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`session()`: the HTTP client for the provider (made when the app starts)."""
        self.settings = settings
        self._oidc = oidc
        self._sso = sso
        self._session = session
        self._clock = clock
        self._discovery: Discovery | None = None
        self._verifier: JwtVerifier | None = None
        self._fetched_at = 0.0
        self._attempted_at: float | None = None
        self._retry: asyncio.Task[None] | None = None
        self._error = "not fetched yet"
        self._fetches: SingleFlight[str, Discovery] = SingleFlight("OIDC discovery")
        # private_key_jwt: read once, at start (the settings checked it can be), so a file
        # moved away later cannot fail a login
        self._signing_key: PrivateKey | None = (
            load_pem_private_key_file(settings.client_key_file).key
            if settings.client_auth == "private_key_jwt" and settings.client_key_file
            else None
        )

    @property
    def id(self) -> str:
        return self.settings.id

    @property
    def error(self) -> str | None:
        """Why the provider is unusable now (None: its discovery document is held)."""
        return None if self._discovery is not None else self._error

    @property
    def backchannel_logout(self) -> bool | None:
        """Whether the provider says it sends back-channel logouts (None: not known yet)."""
        return None if self._discovery is None else self._discovery.backchannel_logout

    @property
    def failed(self) -> bool:
        """True when porter asked for the discovery document, got none, and is not asking now:
        its login button cannot work until a later fetch (``retry_soon``) succeeds."""
        return (
            self._discovery is None
            and self._attempted_at is not None
            and not self._fetches.running(self.id)
        )

    def retry_soon(self) -> None:
        """Ask for the discovery document again, in the background, if RETRY has passed since
        the last attempt (a login page asks on behalf of the next visitor)."""
        if self._retry is None or self._retry.done():
            self._retry = asyncio.get_running_loop().create_task(self._discover_quietly())

    async def _discover_quietly(self) -> None:
        with contextlib.suppress(OidcError):  # logged by _fetch
            await self.discovery()

    async def discovery(self) -> Discovery:
        """The provider's endpoints; OidcError(provider_unavailable) when they cannot be had."""
        now = self._clock()
        held = self._discovery
        fetching = self._fetches.running(self.id)
        if held is not None and (fetching or now - self._fetched_at < REFRESH):
            return held  # a refresh in flight does not hold up a login
        # nothing held and a fetch in flight (the one at start-up): wait for it
        if not fetching and self._attempted_at is not None and now - self._attempted_at < RETRY:
            if held is not None:
                return held
            raise self._unavailable()
        try:
            return await self._fetches.run(self.id, self._fetch)
        except OidcError:
            if held is not None:  # keep using the old document while the provider is down
                return held
            raise

    def _unavailable(self) -> OidcError:
        return OidcError(
            "provider_unavailable",
            f"{self.settings.label} is not available at the moment. Please try again later.",
            status=503,
        )

    async def _fetch(self) -> Discovery:
        self._attempted_at = self._clock()
        url = self.settings.issuer.rstrip("/") + "/.well-known/openid-configuration"
        try:
            data = await self._get(url)
            found = parse_discovery(data, self.settings.issuer)
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError, ValueError) as exc:
            self._error = describe_failure(exc)
            log.error("OIDC provider %s: discovery failed: %s", self.id, self._error)
            raise self._unavailable() from None
        if self._verifier is None or (
            self._discovery is not None and self._discovery.jwks_uri != found.jwks_uri
        ):
            old = self._verifier
            issuer = self.settings.issuer_settings(found.jwks_uri)
            trusted = trusted_issuer_from_settings(issuer, self._sso, session=self._session())
            self._verifier = JwtVerifier([trusted], max_token_size=self._sso.max_token_size)
            if old is not None:
                await old.aclose()
        if self._discovery is None and not found.backchannel_logout:
            log.warning("OIDC provider %s: %s", self.id, NO_BACKCHANNEL)
        self._discovery, self._fetched_at = found, self._clock()
        log.info("OIDC provider %s: discovery document loaded", self.id)
        return found

    async def _get(self, url: str) -> bytes:
        timeout = aiohttp.ClientTimeout(total=self._oidc.timeout)
        headers = {hdrs.ACCEPT: "application/json", hdrs.ACCEPT_ENCODING: "identity"}
        async with self._session().get(
            url, headers=headers, timeout=timeout, allow_redirects=False
        ) as resp:
            if resp.status != 200:
                raise ValueError(f"HTTP status {resp.status} from {url}")
            return await read_limited(resp, MAX_DOCUMENT)

    def authorization_url(
        self,
        found: Discovery,
        redirect_uri: str,
        pre: PreLogin,
        asked: Mapping[str, str] | None = None,
    ) -> str:
        """The provider's authorization URL for `pre`: the configured `authorize_params`,
        then `asked` (porter's login URL's login_hint, ui_locales, prompt), then porter's
        own parameters, which nothing overrides."""
        query = dict(self.settings.authorize_params)
        query.update(asked or {})
        query.update(
            {
                "response_type": "code",
                "client_id": self.settings.client_id,
                "redirect_uri": redirect_uri,
                "scope": " ".join(self.settings.scopes),
                "state": pre.state,
                "nonce": pre.nonce,
                "code_challenge": pkce_challenge(pre.verifier),
                "code_challenge_method": "S256",
            }
        )
        return str(URL(found.authorization_endpoint).update_query(query))

    async def exchange(
        self, found: Discovery, code: str, verifier: str, redirect_uri: str
    ) -> TokenAnswer:
        """The tokens the token endpoint gives for `code`; OidcError when it refuses."""
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
        }
        headers = {hdrs.ACCEPT: "application/json", hdrs.ACCEPT_ENCODING: "identity"}
        self._authenticate(found, form, headers)
        status, body = await self._ask(
            "token endpoint", "POST", found.token_endpoint, data=form, headers=headers
        )
        answer = _json_object(body)
        if status != 200:
            error = answer.get("error") if isinstance(answer.get("error"), str) else "?"
            log.warning("OIDC provider %s: the code was refused (%d %s)", self.id, status, error)
            if status >= 500:
                raise self._unavailable()
            raise OidcError(
                "exchange_failed",
                "The sign-in could not be completed. Please try again.",
                status=401,
            )
        token = answer.get("id_token")
        if not isinstance(token, str) or not token:
            raise OidcError("no_id_token", "The identity provider sent no ID token.", status=401)
        access = answer.get("access_token")
        return TokenAnswer(token, access if isinstance(access, str) and access else None)

    async def _ask(self, what: str, method: str, url: str, **kwargs: Any) -> tuple[int, bytes]:
        """One call to the provider: its status and body (at most MAX_DOCUMENT), within
        `[oidc] timeout`, no redirect followed; provider_unavailable when it cannot be made."""
        timeout = aiohttp.ClientTimeout(total=self._oidc.timeout)
        try:
            async with self._session().request(
                method, url, timeout=timeout, allow_redirects=False, **kwargs
            ) as resp:
                return resp.status, await read_limited(resp, MAX_DOCUMENT)
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError, ValueError) as exc:
            log.error("OIDC provider %s: %s failed: %s", self.id, what, describe_failure(exc))
            raise self._unavailable() from None

    def _authenticate(
        self, found: Discovery, form: dict[str, str], headers: dict[istr, str]
    ) -> None:
        """Porter's client authentication at the token endpoint (`client_auth`)."""
        client = self.settings
        if client.client_auth == "private_key_jwt":  # RFC 7523 2.2, OIDC Core 9
            now = int(time.time())
            assertion = {
                "iss": client.client_id,
                "sub": client.client_id,
                "aud": found.token_endpoint,
                "jti": secrets.token_urlsafe(24),
                "iat": now,
                "exp": now + 60,
            }
            header = {"kid": client.client_key_id} if client.client_key_id else None
            form["client_id"] = client.client_id
            form["client_assertion_type"] = JWT_BEARER
            form["client_assertion"] = jwt.encode(
                assertion, self._client_key(), algorithm=client.client_key_alg, headers=header
            )
        elif client.client_secret is None:  # a public client
            form["client_id"] = client.client_id
        elif client.client_auth == "client_secret_post":
            form["client_id"] = client.client_id
            form["client_secret"] = client.client_secret
        else:  # client_secret_basic (RFC 6749 2.3.1)
            pair = f"{_form(client.client_id)}:{_form(client.client_secret)}"
            headers[hdrs.AUTHORIZATION] = "Basic " + base64.b64encode(pair.encode()).decode()

    def _client_key(self) -> PrivateKey:
        assert self._signing_key is not None  # client_key_file is required (settings)
        return self._signing_key

    async def userinfo(
        self, found: Discovery, verified: VerifiedToken, access: str | None
    ) -> VerifiedToken:
        """`verified` with the userinfo endpoint's claims added (`userinfo = true`): the ID
        token's own claims win, and the answer must be about the same `sub` (OIDC Core
        5.3.2). OidcError when the endpoint cannot be asked or answers for someone else."""
        if found.userinfo_endpoint is None or access is None:
            log.error(
                "OIDC provider %s: userinfo asked for, but no endpoint or access token", self.id
            )
            raise _incomplete()
        headers = {
            hdrs.ACCEPT: "application/json",
            hdrs.ACCEPT_ENCODING: "identity",
            hdrs.AUTHORIZATION: f"Bearer {access}",
        }
        status, body = await self._ask("userinfo", "GET", found.userinfo_endpoint, headers=headers)
        claims = _json_object(body)
        if status != 200 or not claims:
            log.warning("OIDC provider %s: userinfo answered %d, no JSON object", self.id, status)
            if status >= 500:
                raise self._unavailable()
            raise _incomplete()
        if claims.get("sub") != verified.claims.get("sub"):
            log.warning("OIDC provider %s: userinfo about another sub", self.id)
            raise _incomplete()
        merged = {**claims, **verified.claims}
        return dataclasses.replace(verified, claims=MappingProxyType(merged))

    async def verify_id_token(self, token: str, nonce: str) -> VerifiedToken:
        """Signature, iss, aud, azp, exp, iat and nonce checked; OidcError otherwise."""
        try:
            verified = await self._verifier_now().verify(
                token, require=("exp", "iat", "iss", "aud", "sub")
            )
        except TokenRejected as exc:
            log.warning("OIDC provider %s: ID token refused (%s)", self.id, exc.reason)
            if exc.reason == "jwks_unavailable":
                raise self._unavailable() from None
            raise OidcError(
                "bad_id_token",
                "The identity provider's answer could not be verified.",
                status=401,
            ) from None
        claims = verified.claims
        aud = claims.get("aud")
        azp = claims.get("azp")
        several = isinstance(aud, list) and len(aud) > 1
        if (several or azp is not None) and azp != self.settings.client_id:
            log.warning("OIDC provider %s: ID token for another party (azp)", self.id)
            raise OidcError(
                "wrong_party",
                "The identity provider's answer was not meant for this site.",
                status=401,
            )
        got = claims.get("nonce")
        if not isinstance(got, str) or not hmac.compare_digest(got.encode(), nonce.encode()):
            log.warning("OIDC provider %s: ID token with a wrong nonce", self.id)
            raise OidcError(
                "bad_nonce", "The sign-in could not be verified. Please try again.", status=401
            )
        return verified

    async def verify_logout_token(self, token: str) -> VerifiedToken:
        """OpenID Connect Back-Channel Logout 1.0, 2.6: signature, iss, aud, iat (and exp
        when present), the back-channel event, sid or sub, no nonce. OidcError otherwise."""
        try:
            verified = await self._verifier_now().verify(token, require=("iss", "aud", "iat"))
        except TokenRejected as exc:
            if exc.reason == "jwks_unavailable":
                raise self._unavailable() from None
            raise _bad_logout(exc.reason) from None
        claims = verified.claims
        events = claims.get("events")
        if not isinstance(events, Mapping) or not isinstance(
            events.get(BACKCHANNEL_EVENT), Mapping
        ):
            raise _bad_logout("no back-channel logout event")
        if "nonce" in claims:
            raise _bad_logout("a nonce (an ID token, not a logout token)")
        if not isinstance(claims.get("jti"), str) or not claims["jti"]:
            raise _bad_logout("no jti")
        sid, sub = claims.get("sid"), claims.get("sub")
        if not (isinstance(sid, str) and sid) and not (isinstance(sub, str) and sub):
            raise _bad_logout("neither sid nor sub")
        iat = claims["iat"]
        if time.time() - iat > LOGOUT_TOKEN_MAX_AGE + self.settings.leeway:
            raise _bad_logout("issued too long ago")
        return verified

    def _verifier_now(self) -> JwtVerifier:
        if self._verifier is None:
            raise self._unavailable()
        return self._verifier

    def end_session_url(
        self, found: Discovery, post_logout_redirect_uri: str, state: str | None = None
    ) -> str | None:
        """Where to send the browser after porter's logout, or None.

        `client_id` names porter, not `id_token_hint`: the ID token would otherwise sit in a
        URL in the browser's history, and it is a credential for any relying party that
        accepts ID tokens as bearer tokens. `state` comes back to the redirect URI."""
        if not self.settings.end_session or found.end_session_endpoint is None:
            return None
        query = {
            "client_id": self.settings.client_id,
            "post_logout_redirect_uri": post_logout_redirect_uri,
        }
        if state is not None:
            query["state"] = state
        return str(URL(found.end_session_endpoint).update_query(query))

    async def aclose(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retry
        await self._fetches.close()
        if self._verifier is not None:
            await self._verifier.aclose()


def _incomplete() -> OidcError:
    return OidcError("bad_userinfo", "The identity provider's answer was incomplete.", status=502)


def _bad_logout(why: str) -> OidcError:
    log.warning("back-channel logout token refused: %s", why)
    return OidcError("bad_logout_token", "invalid logout token", status=400)


def _form(value: str) -> str:
    """application/x-www-form-urlencoded, as RFC 6749 2.3.1 asks for Basic credentials."""
    return str(URL.build(query={"v": value}).raw_query_string)[2:]


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


# -- the pre-login cookie -------------------------------------------------------------------


@dataclass(frozen=True)
class PreLogin:
    """What a login in progress remembers between porter's redirect and the callback."""

    provider: str
    state: str
    nonce: str
    verifier: str
    target: str
    expires: float

    @classmethod
    def start(cls, provider: str, target: str, lifetime: float) -> PreLogin:
        return cls(
            provider=provider,
            state=secrets.token_urlsafe(32),
            nonce=secrets.token_urlsafe(32),
            verifier=secrets.token_urlsafe(48),  # 64 characters: RFC 7636 allows 43-128
            target=target,
            expires=time.time() + lifetime,
        )


_AAD = b"omero-porter oidc pre-login v1"


class PreLoginSealer:
    """Seals a PreLogin into a cookie value and opens it again (None: forged, changed,
    sealed with another secret, or expired)."""

    def __init__(self, secret: str) -> None:
        key = hmac.new(secret.encode(), b"omero-porter oidc pre-login", hashlib.sha256).digest()
        self._aead = AESGCM(key)

    def seal(self, pre: PreLogin) -> str:
        plain = json.dumps(
            [pre.provider, pre.state, pre.nonce, pre.verifier, pre.target, pre.expires]
        ).encode()
        iv = secrets.token_bytes(12)
        sealed = iv + self._aead.encrypt(iv, plain, _AAD)
        return base64.urlsafe_b64encode(sealed).rstrip(b"=").decode("ascii")

    def open(self, value: str, now: float | None = None) -> PreLogin | None:
        if not value or len(value) > 4096 or not value.isascii():
            return None
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
            plain = self._aead.decrypt(raw[:12], raw[12:], _AAD)
            provider, state, nonce, verifier, target, expires = json.loads(plain)
        except (ValueError, InvalidTag, TypeError):
            return None
        pre = PreLogin(provider, state, nonce, verifier, target, float(expires))
        if pre.expires < (time.time() if now is None else now):
            return None
        return pre
