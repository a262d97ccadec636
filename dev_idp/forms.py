"""Reading a submitted form once, for every endpoint: malformed input is None, never an exception.

A body that is not UTF-8 (``\\xff\\xfe%%%``), a repeated field (ambiguous: which one counts?), a file part or an
oversized value would otherwise surface as a 500; each caller turns None into its own 400 (Cognito's JSON error
for the token endpoint, the error page for the hosted UI).
"""

from __future__ import annotations

from aiohttp import web

MAX_FIELD = 4096


async def read_form(request: web.Request, *, max_field: int = MAX_FIELD) -> dict[str, str] | None:
    if request.content_type != "application/x-www-form-urlencoded":
        return None
    try:
        data = await request.post()
    except (UnicodeDecodeError, ValueError, web.HTTPRequestEntityTooLarge):
        return None
    fields: dict[str, str] = {}
    for key in data:
        values = data.getall(key)
        if len(values) != 1 or not isinstance(values[0], str) or len(values[0]) > max_field:
            return None
        fields[key] = values[0]
    return fields
