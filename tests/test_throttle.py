"""auth/login_throttle.py, in memory: failed logins counted per address and per user."""

from __future__ import annotations

from auth.login_throttle import MemoryLoginThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def throttle(clock: Clock, **limits: int) -> MemoryLoginThrottle:
    values = {"max_per_address": 20, "max_per_user": 3, "window": 60.0, **limits}
    return MemoryLoginThrottle(clock=clock, **values)  # type: ignore[arg-type]


async def test_a_user_is_throttled_after_its_limit_from_any_address() -> None:
    clock = Clock()
    limiter = throttle(clock)
    for n in range(3):
        assert await limiter.retry_after(f"10.0.0.{n}", "Alice") is None
        await limiter.failed(f"10.0.0.{n}", "Alice")
    assert await limiter.retry_after("10.0.0.99", "alice") == 61  # names compared casefolded
    assert await limiter.retry_after("10.0.0.99", "bob") is None


async def test_an_address_is_throttled_whatever_user_it_tries() -> None:
    clock = Clock()
    limiter = throttle(clock, max_per_address=2, max_per_user=100)
    await limiter.failed("10.0.0.1", "a")
    await limiter.failed("10.0.0.1", "b")
    assert await limiter.retry_after("10.0.0.1", "c") is not None
    assert await limiter.retry_after("10.0.0.2", "c") is None


async def test_the_window_ends_the_throttle_and_success_clears_it() -> None:
    clock = Clock()
    limiter = throttle(clock)
    for _ in range(3):
        await limiter.failed("10.0.0.1", "alice")
    clock.now += 30
    assert await limiter.retry_after("10.0.0.1", "alice") == 31  # what is left of the window
    clock.now += 31
    assert await limiter.retry_after("10.0.0.1", "alice") is None
    for _ in range(2):
        await limiter.failed("10.0.0.1", "alice")
    await limiter.succeeded("10.0.0.1", "alice")
    await limiter.failed("10.0.0.1", "alice")
    assert await limiter.retry_after("10.0.0.1", "alice") is None  # counting started again
