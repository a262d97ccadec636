"""Access log lines without query strings: the callback's query carries an authorization code and state."""

from __future__ import annotations

import logging

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

from .logs import ACCESS
from .observe import access_fields


class AccessLogger(AbstractAccessLogger):
    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)  # GATEWAY_ACCESS_LOG=false: aiohttp skips the access log

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
            extra={ACCESS: access_fields(request, response, time)},
        )
