"""Admin-only endpoints, the local stand-in for AdminDisableUser / AdminEnableUser / AdminGetUser.

They need ``Authorization: Bearer <admin token>`` (the token is printed at startup). ``python -m dev_idp admin``
calls them from a shell.
"""

from __future__ import annotations

import hmac
import json
import urllib.error
import urllib.request
from typing import Any

from aiohttp import web

from .pool import POOL, log


def _check_admin(request: web.Request) -> None:
    expected = request.app[POOL].admin_token
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    # SECURITY: without the admin token nobody can disable, enable or inspect users.
    if scheme.lower() != "bearer" or not hmac.compare_digest(presented.encode(), expected.encode()):
        raise web.HTTPUnauthorized(
            text=json.dumps({"error": "invalid_token"}),
            content_type="application/json",
            headers={"WWW-Authenticate": 'Bearer realm="dev_idp admin"'},
        )


def _user_json(request: web.Request) -> dict[str, Any]:
    pool = request.app[POOL]
    user = pool.directory.users.get(request.match_info["username"])
    if user is None:
        raise web.HTTPNotFound(text=json.dumps({"error": "UserNotFoundException"}), content_type="application/json")
    return {
        "username": user.username,
        "sub": user.sub,
        "email": user.email,
        "groups": list(user.groups),
        "status": user.status,
        "enabled": user.enabled,
    }


async def show_user(request: web.Request) -> web.Response:
    _check_admin(request)
    return web.json_response(_user_json(request))


async def stats(request: web.Request) -> web.Response:
    """How many token requests each grant type has had: lets tests count refreshes from the IdP's side."""
    _check_admin(request)
    return web.json_response({"token_requests": dict(request.app[POOL].grants.token_requests)})


async def set_enabled(request: web.Request) -> web.Response:
    _check_admin(request)
    body = _user_json(request)
    user = request.app[POOL].directory.users[body["username"]]
    user.enabled = request.match_info["action"] == "enable"
    log.info("admin: %s %sd", user.username, request.match_info["action"])
    return web.json_response(body | {"enabled": user.enabled})


def run_admin_command(action: str, username: str, *, url: str, token: str) -> int:
    """``python -m dev_idp admin {disable,enable,show} USER``: returns the process exit code."""
    path = f"/admin/users/{urllib.request.quote(username, safe='')}"
    method = "GET" if action == "show" else "POST"
    if action != "show":
        path += f"/{action}"
    request = urllib.request.Request(  # noqa: S310 - the URL is the operator's own dev_idp
        url.rstrip("/") + path, method=method, headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            print(response.read().decode())
            return 0
    except urllib.error.HTTPError as exc:
        print(f"dev_idp admin: {exc.code} {exc.read().decode(errors='replace')}")
        return 1
    except urllib.error.URLError as exc:
        print(f"dev_idp admin: cannot reach {url}: {exc.reason}")
        return 1
