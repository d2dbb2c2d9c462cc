"""Fixture plugins shared by the whole suite."""

pytest_plugins = [
    "tests.porter_fixtures",
    "tests.smtp_fixture",
    "tests.redis_fixture",
]
