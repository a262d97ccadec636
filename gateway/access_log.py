"""Access log lines without query strings: the callback's query carries an authorization code and state."""

from __future__ import annotations

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse


class AccessLogger(AbstractAccessLogger):
    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        # SECURITY: request.path has no query string, so codes and tokens in URLs stay out of the log.
        self.logger.info(
            '%s "%s %s" %s %s %.1fms',
            request.remote,
            request.method,
            request.path[:300],
            response.status,
            response.body_length,
            time * 1000,
        )
