"""Fixture plugins shared by the whole suite."""

pytest_plugins = [
    "tests.omero_sim.fixture",
    "tests.web_fixture",
    "tests.porter_fixtures",
    "tests.smtp_fixture",
    "tests.redis_fixture",
    "tests.sentinel_fixture",
    "tests.gateway_fixtures",
    "tests.browser_fixtures",
    "tests.session_fixtures",
    "tests.oidc_fixture",
    "tests.dot_fixture",
]
