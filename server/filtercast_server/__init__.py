"""filtercast server: models, gradient-ascent engine, scheduler and gRPC API.

TensorFlow is imported only by the modules that need it, quietly (see tf.py);
its C++ log level is set to warnings and above here, before that import,
unless FILTERCAST_TF_LOG=1 or TF_CPP_MIN_LOG_LEVEL is already set.
"""

import os

if os.environ.get("FILTERCAST_TF_LOG", "").lower() not in ("1", "true", "yes"):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # warnings and info off, errors on


def __getattr__(name: str) -> str:
    """`__version__`, read from the installed metadata when first asked for.

    importlib.metadata costs ~40 ms to import: `--help` should not pay for it.
    """
    if name != "__version__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("filtercast")
    except PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"
