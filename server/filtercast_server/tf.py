"""TensorFlow and Keras, imported once and quietly.

TensorFlow 2.21 logs through absl straight to the process's stderr while it
loads (oneDNN notices, "could not find cuda drivers"), before any logging is
configured and regardless of TF_CPP_MIN_LOG_LEVEL. Every server module takes
`tf` and `keras` from here: the import runs with file descriptor 2 pointed at
a temporary file, and what it wrote is re-logged at DEBUG on the
``filtercast_server.tensorflow`` logger. FILTERCAST_TF_LOG=1 leaves stderr alone.
"""

import logging
import os
import sys
import tempfile

log = logging.getLogger("filtercast_server.tensorflow")


def _import_quietly() -> None:
    if os.environ.get("FILTERCAST_TF_LOG", "").lower() in ("1", "true", "yes"):
        import keras
        import tensorflow

        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            import keras  # noqa: F401
            import tensorflow  # noqa: F401
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured = sink.read().decode(errors="replace")
    for line in captured.splitlines():
        log.debug("%s", line)


_import_quietly()

import keras  # noqa: E402  (already loaded above, quietly)
import tensorflow as tf  # noqa: E402

__all__ = ["keras", "tf"]
