"""Access log lines without query strings: the callback's query carries an authorization code and state."""

from __future__ import annotations

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse


class AccessLogger(AbstractAccessLogger):
    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        # SECURITY: the path without its query string (codes and tokens stay out of the log), still
        # percent-encoded (a decoded %0A would forge a log line).
        self.logger.info(
            '%s "%s %s" %s %s %.1fms',
            request.remote,
            request.method,
            request.rel_url.raw_path[:300],
            response.status,
            response.body_length,
            time * 1000,
        )
