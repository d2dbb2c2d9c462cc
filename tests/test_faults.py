"""The fault suite: each fault, short, with real parts (the OMERO test server over Ice, real
OMERO.web, real Redis and SMTP, porter as a real process where signals matter). Each test
asserts the exact answers during the fault and normal answers after it, with nobody
restarting porter."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp

from auth.public_settings import PublicSessionSettings
from filters.settings import PublicRuleSettings
from tests.gateway_fixtures import Gateway, GatewayFactory, cookieless_get, log_in
from tests.omero_sim.fixture import OmeroSim

PING = "/webclient/keepalive_ping/"


def public(
    sim: OmeroSim, url_filter: str = r"^/(webgateway/.*|webclient/keepalive_ping/)"
) -> dict[str, Any]:
    return {
        "public": PublicRuleSettings(enabled=True, url_filter=url_filter),
        "public_session": PublicSessionSettings(
            enabled=True, user="public", password=sim.users["public"], failure_backoff=0.0
        ),
    }


async def anonymous(client: Gateway, path: str = PING) -> tuple[int, str]:
    return await cookieless_get(client, path)


async def user_ping(client: Gateway) -> tuple[int, str]:
    resp = await client.get(PING, allow_redirects=False)
    return resp.status, await resp.text()


async def test_omero_down_then_up_the_next_request_of_a_user_and_of_the_public_works(
    gateway: GatewayFactory, omero_sim: OmeroSim
) -> None:
    client = await gateway(sections=public(omero_sim))
    assert (await log_in(client, "alice", omero_sim.users["alice"])).status == 303
    assert await user_ping(client) == (200, "OK")
    assert await anonymous(client) == (200, "OK")

    omero_sim.down()
    try:
        # OMERO.web cannot join: it drops the connector and answers "Connection Failed";
        # porter renews, cannot reach OMERO either, and says so
        status, _ = await user_ping(client)
        assert status == 503
        status, _ = await anonymous(client)
        assert status == 503
    finally:
        omero_sim.up()

    # the very next request of each gets the real answer again
    assert await user_ping(client) == (200, "OK")
    assert await anonymous(client) == (200, "OK")


async def test_a_killed_public_session_is_renewed_by_the_first_request_once(
    gateway: GatewayFactory, omero_sim: OmeroSim
) -> None:
    client = await gateway(sections=public(omero_sim))
    assert await anonymous(client) == (200, "OK")
    [old] = [s["key"] for s in omero_sim.sessions() if s["user"] == "public"]
    logins = omero_sim.stats()["logins"]
    assert omero_sim.kill_session(old)

    answers = await asyncio.gather(*(anonymous(client) for _ in range(20)))
    assert set(answers) == {(200, "OK")}  # no visitor sees OMERO.web's failure
    assert omero_sim.stats()["logins"] - logins == 1  # one new public session, single-flight
    assert [s["user"] for s in omero_sim.sessions()].count("public") == 1


async def test_omero_hanging_then_up_answers_504_then_the_real_answer(
    gateway: GatewayFactory, omero_sim: OmeroSim
) -> None:
    client = await gateway(sections=public(omero_sim), read_timeout=2.0)
    assert (await log_in(client, "alice", omero_sim.users["alice"])).status == 303
    omero_sim.hang()
    try:
        status, _ = await user_ping(client)  # OMERO.web waits on OMERO: porter stops waiting
        assert status in (503, 504)
    finally:
        omero_sim.up()
    for _ in range(3):  # OMERO.web's own wait for the hung join may still be ending
        if await user_ping(client) == (200, "OK"):
            break
        await asyncio.sleep(1)
    assert await user_ping(client) == (200, "OK")
    assert await anonymous(client) == (200, "OK")


async def test_redis_stopped_then_continued_is_503_then_as_before(
    gateway: GatewayFactory, omero_sim: OmeroSim, redis_server_factory: Any
) -> None:
    from tests.redis_fixture import redis_sessions, stopped

    redis = redis_server_factory()
    client = await gateway(sections={**public(omero_sim), "session": redis_sessions(redis)})
    assert (await log_in(client, "alice", omero_sim.users["alice"])).status == 303
    assert await anonymous(client) == (200, "OK")
    with stopped(redis):
        assert (await user_ping(client))[0] == 503  # never logged out, never a 500
        assert await anonymous(client) == (200, "OK")  # the held public session serves on
    assert await user_ping(client) == (200, "OK")


async def test_redis_killed_and_restarted_empty_asks_users_to_log_in_again(
    gateway: GatewayFactory, omero_sim: OmeroSim, redis_server_factory: Any
) -> None:
    from tests.redis_fixture import redis_sessions

    redis = redis_server_factory()
    sections = {**public(omero_sim, "^/webgateway/.*"), "session": redis_sessions(redis)}
    client = await gateway(sections=sections)
    assert (await log_in(client, "alice", omero_sim.users["alice"])).status == 303
    assert await user_ping(client) == (200, "OK")
    rdef = "/webgateway/getImgRDef/"
    assert (await anonymous(client, rdef))[0] == 200
    redis.stop()
    assert (await user_ping(client))[0] == 503
    redis.start()  # empty: no persistence
    status, _ = await user_ping(client)
    if status == 503:  # the first command may still meet the old connection
        status, _ = await user_ping(client)
    assert status == 302  # the session is gone with Redis's data: log in again, no 500
    assert (await anonymous(client, rdef))[0] == 200
    assert [s["user"] for s in omero_sim.sessions()].count("public") == 1  # none leaked


async def test_omero_web_killed_and_restarted(
    omero_sim: OmeroSim, tmp_path: Any, aiohttp_client: Any
) -> None:
    import os
    import signal

    from proxy.app import create_app
    from tests.gateway_fixtures import gateway_settings
    from tests.web_fixture import restart_web, start_web, stop_web, web_config

    web = start_web(web_config(omero_sim), tmp_path)
    try:
        client = await aiohttp_client(
            create_app(gateway_settings(omero_sim, web, sections=public(omero_sim)))
        )
        assert (await log_in(client, "alice", omero_sim.users["alice"])).status == 303
        assert await user_ping(client) == (200, "OK")
        assert await anonymous(client) == (200, "OK")
        assert web.process is not None
        workers = Path(f"/proc/{web.process.pid}/task/{web.process.pid}/children")
        for child in workers.read_text().split():  # gunicorn's worker serves on otherwise
            os.kill(int(child), signal.SIGKILL)
        os.kill(web.process.pid, signal.SIGKILL)
        web.process.wait()
        assert (await user_ping(client))[0] == 502
        assert (await anonymous(client))[0] == 502
        # the same OMERODIR and port again, as a service manager would restart it
        await asyncio.to_thread(restart_web, web)
        assert await user_ping(client) == (200, "OK")
        assert await anonymous(client) == (200, "OK")
    finally:
        stop_web(web)


async def test_smtp_down_past_the_retry_budget_the_mail_arrives_after_recovery(
    start_smtp: Any, echo_upstream: Any, porter: Any, tmp_path: Any
) -> None:
    from tests.smtp_fixture import free_port, settings_for
    from tests.test_error_mail import add_boom

    port = free_port()
    mail = settings_for(
        port, retries=1, backoff=0.01, spool_dir=str(tmp_path), spool_retry_interval=0.1
    )
    client = await porter(sections={"mail": mail}, configure=add_boom)
    for _ in range(2):
        assert (await client.get("/test-only/boom")).status == 500  # the user is not held up
    while not list(tmp_path.glob("*.eml")):  # retries ran out: kept on disk
        await asyncio.sleep(0.05)
    server = start_smtp(port=port)
    [received] = await server.inbox.wait_for(1)  # one failure, one mail (the repeat: a digest)
    assert "Boom: porter broke" in received.text


async def test_sigterm_under_load_lets_every_request_finish(
    redis_server: Any, echo_upstream: Any, porter_process: Any
) -> None:
    import signal

    from tests.test_process import logged_in

    porter, cookies = await logged_in(
        redis_server, porter_process, upstream=echo_upstream.url, shutdown_grace=10.0
    )
    async with aiohttp.ClientSession(cookies=cookies) as session:

        async def one(n: int) -> tuple[int, str]:
            async with session.get(f"{porter.url}/slow/1?n={n}") as resp:
                return resp.status, await resp.text()

        load = [asyncio.create_task(one(n)) for n in range(20)]
        await asyncio.wait_for(echo_upstream.state.slow_started.wait(), 10)
        await asyncio.sleep(0.2)
        porter.process.send_signal(signal.SIGTERM)
        answers = await asyncio.wait_for(asyncio.gather(*load), 15)
    assert set(answers) == {(200, "slow done")}
    assert await asyncio.to_thread(porter.process.wait, 15) == 0
    assert "Traceback" not in porter.log()
