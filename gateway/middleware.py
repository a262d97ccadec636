"""The one place where failures become answers: typed gateway errors, HTTP errors, and anything unexpected."""

from __future__ import annotations

import logging

from aiohttp import web

from .errors import GatewayError
from .responses import error_response

log = logging.getLogger("gateway")


@web.middleware
async def error_middleware(request: web.Request, handler: web.Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except GatewayError as exc:
        link = ("/oauth2/sign_in", "Sign in again") if exc.status in (400, 401, 403) else None
        return error_response(request, exc.status, exc.title, exc.message, code=exc.code, link=link)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(request, exc.status, exc.reason, exc.reason, code=exc.reason.lower().replace(" ", "_"))
    except ConnectionResetError:
        raise
    except Exception:
        # SECURITY: no stack trace or exception text reaches the client; the log has the details.
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(
            request, 500, "Something went wrong", "The gateway could not handle this request.", code="server_error"
        )
