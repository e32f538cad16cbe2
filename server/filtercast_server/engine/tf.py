"""TensorFlow and Keras, imported once and quietly.

TensorFlow 2.21 logs through absl straight to the process's stderr (oneDNN
notices while it loads, "failed call to cuInit" when it first looks for a
GPU), before any logging is configured and regardless of TF_CPP_MIN_LOG_LEVEL.
Every server module takes `tf` and `keras` from here, and those two moments
run inside `native_logs_captured()`: file descriptor 2 points at a temporary
file, absl's lines are re-logged at DEBUG on ``filtercast_server.tensorflow``,
and anything else written meanwhile (another thread's log record) is copied
back to stderr unchanged. FILTERCAST_TF_LOG=1 leaves stderr alone.
"""

import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger("filtercast_server.tensorflow")
ABSL_LINE = re.compile(r"^([IWEF]\d{4} |WARNING: All log messages before absl)")


@contextmanager
def native_logs_captured() -> Iterator[None]:
    """Route what native code writes to stderr in this block to the DEBUG log."""
    if os.environ.get("FILTERCAST_TF_LOG", "").lower() in ("1", "true", "yes"):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:  # replayed even when the block raised: its lines may say why
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            _replay(sink.read().decode(errors="replace"))


def _replay(captured: str) -> None:
    """Absl lines to the log (fatal ones at ERROR, the rest at DEBUG); anything else to stderr."""
    for line in captured.splitlines():
        if line.startswith("F") and ABSL_LINE.match(line):
            log.error("%s", line)
        elif ABSL_LINE.match(line):
            log.debug("%s", line)
        else:
            print(line, file=sys.stderr)


with native_logs_captured():
    import keras
    import tensorflow as tf

__all__ = ["keras", "native_logs_captured", "tf"]
