"""Composition root: ``create_app(pool)`` wires every route of the pool's issuer and domain."""

from __future__ import annotations

import logging

from aiohttp import web

from . import admin, hosted_ui, oauth, pages
from .pool import POOL, Pool

log = logging.getLogger("dev_idp")


@web.middleware
async def _no_stack_traces(request: web.Request, handler: web.Handler) -> web.StreamResponse:
    """Unexpected failures become a plain error page; the traceback goes to the log, never to the client."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return web.Response(text=pages.error_page("server_error"), status=500, content_type="text/html")


def create_app(pool: Pool) -> web.Application:
    app = web.Application(middlewares=[_no_stack_traces], client_max_size=64 * 1024)
    app[POOL] = pool
    app.router.add_get("/", hosted_ui.index)
    app.router.add_get("/{pool_id}/.well-known/openid-configuration", oauth.discovery)
    app.router.add_get("/{pool_id}/.well-known/jwks.json", oauth.jwks)
    app.router.add_get("/oauth2/authorize", oauth.authorize)
    app.router.add_post("/oauth2/token", oauth.token)
    app.router.add_route("GET", "/oauth2/userInfo", oauth.userinfo)
    app.router.add_route("POST", "/oauth2/userInfo", oauth.userinfo)
    app.router.add_post("/oauth2/revoke", oauth.revoke)
    app.router.add_get("/logout", oauth.logout)
    app.router.add_get("/login", hosted_ui.login_get)
    app.router.add_post("/login", hosted_ui.login_post)
    app.router.add_get("/signup", hosted_ui.signup_get)
    app.router.add_post("/signup", hosted_ui.signup_post)
    app.router.add_get("/confirm", hosted_ui.confirm_get)
    app.router.add_post("/confirm", hosted_ui.confirm_post)
    app.router.add_get("/error", hosted_ui.error_get)
    app.router.add_get("/admin/stats", admin.stats)
    app.router.add_get("/admin/users/{username}", admin.show_user)
    app.router.add_post("/admin/users/{username}/{action:enable|disable}", admin.set_enabled)
    return app
