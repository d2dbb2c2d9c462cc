"""Why an OpenID login ended on porter's login page: one short code per outcome.

The callback URL holds the provider's code and state, so it is never a page the browser keeps:
every outcome there is a 303. A refusal goes to porter's login page with
``?oidc_error=<code>&provider=<id>``; the page looks the code up here for its status and its
words. Nothing but the code crosses the URL, and a code that is not in the table shows nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from yarl import URL

from proxy.identity.tokens import ADMIN_REFUSED, NOT_IN_GROUP, SSO_UNAVAILABLE, UNKNOWN_USER

LOGIN_EXPIRED = "Your sign-in took too long or was started in another window. Please try again."
NOT_VERIFIED = "The identity provider's answer could not be verified."
STORE_DOWN = "The session store is unavailable. Please retry."
ASK_ADMINS = "Please ask this site's administrators."


@dataclass(frozen=True)
class Refusal:
    status: int
    message: str  # "{provider}": the provider's display name


REFUSALS: dict[str, Refusal] = {
    # the login itself: expired, replayed, tampered with, or refused at the provider
    "login_expired": Refusal(400, LOGIN_EXPIRED),
    "bad_state": Refusal(400, LOGIN_EXPIRED),
    "replayed": Refusal(400, LOGIN_EXPIRED),
    "provider_denied": Refusal(403, "{provider} did not sign you in."),
    "provider_unavailable": Refusal(
        503, "{provider} is not available at the moment. Please try again later."
    ),
    "exchange_failed": Refusal(401, "The sign-in could not be completed. Please try again."),
    "bad_id_token": Refusal(401, NOT_VERIFIED),
    "no_id_token": Refusal(401, "{provider} sent no ID token. Please try again."),
    "wrong_party": Refusal(401, "The identity provider's answer was not meant for this site."),
    "bad_userinfo": Refusal(
        502, "The identity provider's answer was incomplete. Please try later."
    ),
    "bad_nonce": Refusal(401, "The sign-in could not be verified. Please try again."),
    # the account porter would log in
    "no_username": Refusal(403, "{provider} did not say who you are. " + ASK_ADMINS),
    "bad_username": Refusal(403, "Your user name at {provider} is not usable here. " + ASK_ADMINS),
    "email_unverified": Refusal(
        403, "Your e-mail address at {provider} is not verified. Verify it, then try again."
    ),
    "admin_account": Refusal(403, ADMIN_REFUSED),
    "denied": Refusal(403, "Your account may not sign in on this site. " + ASK_ADMINS),
    "not_allowed": Refusal(
        403, "Your account is not allowed to sign in on this site. " + ASK_ADMINS
    ),
    "no_group": Refusal(
        403, "None of your groups at {provider} gives access to OMERO here. " + ASK_ADMINS
    ),
    "not_in_group": Refusal(403, NOT_IN_GROUP),
    "bad_server": Refusal(403, "Your account names no OMERO server of this site. " + ASK_ADMINS),
    "unknown_user": Refusal(403, UNKNOWN_USER),
    # porter's parts
    "sso_unavailable": Refusal(503, SSO_UNAVAILABLE),
    "omero_unavailable": Refusal(503, "The OMERO server is not responding. Please try later."),
    "web_unavailable": Refusal(502, "OMERO.web is not responding. Please try later."),
    "store_unavailable": Refusal(503, STORE_DOWN),
    "failed": Refusal(400, "The sign-in could not be completed. Please try again."),
}

# what the user fixes by signing in as someone else at the provider
ACCOUNT_REFUSALS = frozenset(
    {
        "admin_account",
        "denied",
        "not_allowed",
        "no_group",
        "not_in_group",
        "unknown_user",
        "no_username",
        "bad_username",
        "bad_server",
        "email_unverified",
    }
)


def code_of(reason: str) -> str:
    """The table's code for an SsoError reason (unknown reasons: the generic one)."""
    return reason if reason in REFUSALS else "failed"


def refusal_query(code: str, provider: str, target: str) -> dict[str, str]:
    return {"oidc_error": code, "provider": provider, "url": target}


def login_location(prefix: str, code: str, provider: str, target: str) -> str:
    """Porter's login page saying why (relative URL, no code or state of the provider's)."""
    return str(URL(prefix + "/porter/login").with_query(refusal_query(code, provider, target)))


def refusal(code: str | None, provider_label: str) -> Refusal | None:
    """What the login page says for `?oidc_error=code`; None for no or an unknown code."""
    found = REFUSALS.get(code or "")
    if found is None:
        return None
    return Refusal(found.status, found.message.replace("{provider}", provider_label))
