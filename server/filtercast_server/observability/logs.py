"""The server's log: JSON lines, and lines a hostile client can trigger kept to one per interval."""

import asyncio
import logging
import sys
import time
from collections import OrderedDict
from typing import Any

from pythonjsonlogger.json import JsonFormatter


def configure_logging(level: str) -> None:
    """JSON lines on stderr; request-scoped records carry request_id."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter("{asctime}{levelname}{name}{message}", style="{"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


class ThrottledLog:
    """One line per key (e.g. client and kind of fault) per `interval` seconds.

    The next line of a key says how many were held back. At most `max_keys`
    keys are remembered (least recently seen forgotten first), so many
    clients cannot grow it without bound.
    """

    def __init__(
        self, logger: logging.Logger, interval: float = 60.0, max_keys: int = 4096
    ) -> None:
        self.logger = logger
        self.interval = interval
        self.max_keys = max_keys
        self._seen: OrderedDict[tuple, list[float]] = OrderedDict()  # key -> [last, held]

    def warning(self, key: tuple, message: str, *args: object, **extra: object) -> bool:
        """Log `message % args` at WARNING unless `key` logged within the interval."""
        return self.log(logging.WARNING, key, message, *args, **extra)

    def log(
        self,
        level: int,
        key: tuple,
        message: str,
        *args: object,
        exc_info: Any = None,
        **extra: object,
    ) -> bool:
        """Log `message % args` at `level` unless `key` logged within the interval; True if so."""
        now = time.monotonic()
        entry = self._seen.get(key)
        if entry is not None and now - entry[0] < self.interval:
            entry[1] += 1
            self._seen.move_to_end(key)
            return False
        held = int(entry[1]) if entry else 0
        self._seen[key] = [now, 0]
        self._seen.move_to_end(key)
        while len(self._seen) > self.max_keys:
            self._seen.popitem(last=False)
        suffix = f" ({held} more like it since the last such line)" if held else ""
        self.logger.log(level, message + suffix, *args, exc_info=exc_info, extra=extra or None)
        return True


def throttle_loop_errors(loop: asyncio.AbstractEventLoop, logger: logging.Logger) -> None:
    """Send the event loop's own error reports through a ThrottledLog.

    asyncio reports what it cannot hand to anyone (a failed accept, an
    exception in a callback) at ERROR, every time: a flood of connections can
    make thousands a second. Each kind is now logged once a minute, with its
    traceback, and says how many were held back.
    """
    throttled = ThrottledLog(logger)

    def report(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        error = context.get("exception")
        message = str(context.get("message") or "asyncio reported an error")
        throttled.log(
            logging.ERROR,
            ("asyncio", message.split("\n", 1)[0][:100], type(error).__name__),
            "%s",
            message,
            exc_info=(type(error), error, error.__traceback__) if error is not None else None,
        )

    loop.set_exception_handler(report)
