"""``python -m gateway sessions list|revoke --user NAME``: see or end every session of one user at once.

For the incident when a laptop is stolen. It reads the same environment as the gateway (GATEWAY_SESSION_STORE must
be ``redis``: cookie sessions live in browsers, where nothing can reach them) and talks to Redis directly, so it
works whether or not a gateway is running.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import sys

from redis.exceptions import RedisError

from .config import ConfigError, Settings
from .session_redis import RedisBackend


def _when(timestamp: int) -> str:
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


async def _run(action: str, username: str, settings: Settings) -> int:
    store = RedisBackend(settings.session)
    try:
        if action == "list":
            sessions = await store.sessions_of(username)
            for session in sorted(sessions, key=lambda s: s.created_at):
                print(
                    f"{session.session_id}  created {_when(session.created_at)}  last seen {_when(session.last_seen)}"
                )
            print(f"{len(sessions)} session(s) for {username}")
        else:
            count = await store.revoke_user(username)
            print(f"revoked {count} session(s) for {username}")
        return 0
    except RedisError as exc:
        print(f"cognito-gateway sessions: cannot reach Redis: {exc.__class__.__name__}", file=sys.stderr)
        return 1
    finally:
        await store.close()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway sessions", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["list", "revoke"])
    parser.add_argument("--user", required=True, help="the username (cognito:username) whose sessions to act on")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env(os.environ)
    except ConfigError as exc:
        print(f"cognito-gateway: {exc}", file=sys.stderr)
        return 2
    if settings.session.store != "redis":
        print(
            "cognito-gateway sessions: needs GATEWAY_SESSION_STORE=redis; cookie sessions live in the browsers and "
            "end at their next refresh, idle timeout or lifetime (see README, Sessions)",
            file=sys.stderr,
        )
        return 2
    return asyncio.run(_run(args.action, args.user, settings))
