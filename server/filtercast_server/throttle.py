"""Log lines a hostile client can trigger at will, at most once per key per interval."""

import logging
import time
from collections import OrderedDict


class ThrottledLog:
    """One WARNING per key (e.g. client and kind of fault) per `interval` seconds.

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
        """Log `message % args` unless `key` logged within the interval; True if logged."""
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
        self.logger.warning(message + suffix, *args, extra=extra or None)
        return True
