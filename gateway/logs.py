"""Log lines: GATEWAY_LOG_FORMAT=text (the format of old) or json (one object a line), and GATEWAY_ACCESS_LOG.

``configure(settings, process=None)`` sets up the root logger, once per process, in place of
``logging.basicConfig``; ``process`` names the process in every line (``worker 2``) when there are several.

A JSON line is ``{"time": "2026-05-01T12:00:00.123Z", "level": "info", "logger": "gateway.auth", "message": …}``,
plus ``process`` when named, ``request_id`` on a line written while a request is handled, ``exception`` with a
traceback, and, on an access line (logger ``aiohttp.access``), the fields of ``observe.access_fields``. json.dumps
escapes every control character, so no value can split a line or forge another.

GATEWAY_ACCESS_LOG=false lifts the access logger above INFO; ``AccessLogger.enabled`` then tells aiohttp so, and it
skips access logging altogether (no timing, no call). ``true`` (the default) keeps it at INFO whatever
GATEWAY_LOG_LEVEL says: the access log is switched by its own variable.
"""

from __future__ import annotations

import datetime
import json
import logging
from typing import TYPE_CHECKING

from . import request_id

if TYPE_CHECKING:
    from .config import Settings

ACCESS = "access"  # the LogRecord attribute with an access line's fields: ``log.info(…, extra={ACCESS: fields})``
ACCESS_LOGGER = "aiohttp.access"


def text_format(process: str | None = None) -> str:
    where = f" [{process.replace('%', '%%')}]" if process else ""
    return f"%(asctime)s %(levelname)s{where} %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, with the request id of the request being handled, if any."""

    def __init__(self, process: str | None = None) -> None:
        super().__init__()
        self._process = process

    def format(self, record: logging.LogRecord) -> str:
        created = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        line: dict[str, object] = {
            "time": created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self._process:
            line["process"] = self._process
        current = request_id.CURRENT.get()
        if current is not None:
            line["request_id"] = current
        fields = getattr(record, ACCESS, None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str)


def configure(settings: Settings, process: str | None = None) -> None:
    """The root logger writes to stderr in GATEWAY_LOG_FORMAT at GATEWAY_LOG_LEVEL; the access log as switched."""
    handler = logging.StreamHandler()
    if settings.observability.log_format == "json":
        handler.setFormatter(JsonFormatter(process))
    else:
        handler.setFormatter(logging.Formatter(text_format(process)))
    logging.basicConfig(level=settings.log_level, handlers=[handler], force=True)
    access = logging.INFO if settings.observability.access_log else logging.WARNING
    logging.getLogger(ACCESS_LOGGER).setLevel(access)
