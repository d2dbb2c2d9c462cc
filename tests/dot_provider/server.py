"""django-oauth-toolkit as the second OpenID provider of the tests (a Python one, beside
panva's oidc-provider on Node): authorization code with PKCE, RS256 ID tokens, RP-initiated
logout, `prompt=login`, and key rotation. No back-channel logout: django-oauth-toolkit has
none, as many providers sites run.

Configured from the JSON in $DOT_CONFIG: {issuer, port, directory, key, accounts, clients,
control}. `accounts`: login -> claims (the password is the login followed by "-pass");
`clients`: django-oauth-toolkit Application fields. POST /control/rotate (with the header
`X-Control: <control>`) makes a new signing key: the old one stays in the JWKS, inactive.
Prints "listening <port>" once it accepts connections.

Run from the project root: python -m tests.dot_provider.server
"""

from __future__ import annotations

import json
import os
import socketserver
import sys
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import django
from django.conf import settings

CONFIG: dict[str, Any] = json.loads(os.environ["DOT_CONFIG"])
HERE = Path(__file__).parent
SCOPES = {
    "openid": "OpenID Connect",
    "profile": "Your name",
    "email": "Your e-mail address",
    "groups": "Your groups",
}

settings.configure(
    DEBUG=False,
    SECRET_KEY="dot-provider-of-the-tests-" + "x" * 32,
    ALLOWED_HOSTS=["127.0.0.1", "localhost"],
    ROOT_URLCONF=__name__,
    INSTALLED_APPS=[
        "django.contrib.auth",
        "django.contrib.contenttypes",
        "django.contrib.sessions",
        "oauth2_provider",
    ],
    MIDDLEWARE=[
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.middleware.csrf.CsrfViewMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
    ],
    DATABASES={
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(Path(CONFIG["directory"]) / "dot.sqlite3"),
        }
    },
    TEMPLATES=[
        {
            "BACKEND": "django.template.backends.django.DjangoTemplates",
            "DIRS": [str(HERE / "templates")],
            "APP_DIRS": True,
            "OPTIONS": {
                "context_processors": [
                    "django.template.context_processors.request",
                    "django.contrib.auth.context_processors.auth",
                ]
            },
        }
    ],
    LOGIN_URL="/accounts/login/",
    USE_TZ=True,
    PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"],  # fast: test users
    OAUTH2_PROVIDER={
        "OIDC_ENABLED": True,
        "OIDC_RSA_PRIVATE_KEY": CONFIG["key"],
        "OIDC_RSA_PRIVATE_KEYS_INACTIVE": [],
        "OIDC_ISS_ENDPOINT": CONFIG["issuer"],
        "OIDC_RP_INITIATED_LOGOUT_ENABLED": True,
        "PKCE_REQUIRED": True,
        "SCOPES": SCOPES,
        "DEFAULT_SCOPES": ["openid"],
        "OAUTH2_VALIDATOR_CLASS": f"{__name__}.Validator",
    },
)
django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.contrib.auth import views as auth_views  # noqa: E402
from django.core.handlers.wsgi import WSGIHandler  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.http import HttpRequest, HttpResponse  # noqa: E402
from django.urls import include, path  # noqa: E402
from django.views.decorators.csrf import csrf_exempt  # noqa: E402
from oauth2_provider.models import get_application_model  # noqa: E402
from oauth2_provider.oauth2_validators import OAuth2Validator  # noqa: E402
from oauth2_provider.settings import oauth2_settings  # noqa: E402

from tests.keys import new_rsa_key, pem  # noqa: E402


class Validator(OAuth2Validator):  # type: ignore[misc]
    """Keycloak's claims as docs/sso.md maps them: preferred_username and groups."""

    oidc_claim_scope = {
        **OAuth2Validator.oidc_claim_scope,
        "groups": "groups",
        "preferred_username": "profile",
    }

    def get_additional_claims(self, request: Any) -> dict[str, Any]:
        claims = CONFIG["accounts"].get(request.user.username, {})
        return {k: v for k, v in claims.items() if not k.startswith("_")}


@csrf_exempt  # type: ignore[untyped-decorator]
def rotate(request: HttpRequest) -> HttpResponse:
    """A new signing key; the one before stays in the JWKS as inactive (as a site rotates)."""
    if request.method != "POST" or request.headers.get("X-Control") != CONFIG["control"]:
        return HttpResponse(status=403)
    provider = settings.OAUTH2_PROVIDER
    provider["OIDC_RSA_PRIVATE_KEYS_INACTIVE"] = [
        provider["OIDC_RSA_PRIVATE_KEY"],
        *provider["OIDC_RSA_PRIVATE_KEYS_INACTIVE"],
    ]
    provider["OIDC_RSA_PRIVATE_KEY"] = new_key()
    oauth2_settings.reload()
    return HttpResponse("rotated\n")


def new_key() -> str:
    return pem(new_rsa_key()).decode()


urlpatterns = [
    path("o/", include("oauth2_provider.urls", namespace="oauth2_provider")),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("control/rotate", rotate),
]


def prepare() -> None:
    call_command("migrate", verbosity=0, interactive=False)
    users = get_user_model()
    for login in CONFIG["accounts"]:
        if not users.objects.filter(username=login).exists():
            users.objects.create_user(login, password=f"{login}-pass")
    applications = get_application_model()
    for client in CONFIG["clients"]:
        applications.objects.filter(client_id=client["client_id"]).delete()
        applications.objects.create(**client)


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        sys.stdout.write(f"{self.address_string()} {format % args}\n")


class _Threading(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


def main() -> None:
    prepare()
    server = make_server(
        "127.0.0.1", CONFIG["port"], WSGIHandler(), server_class=_Threading, handler_class=_Quiet
    )
    print(f"listening {CONFIG['port']}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
