"""filtercast server: models, gradient-ascent engine, scheduler and gRPC API.

Rooms: `engine/` (TensorFlow), `serving/` (gRPC, HTTP, the scheduler),
`observability/` (metrics, logs), `cache/` (results kept), and here the
TF-free core (params, presets, overrides, selection, planning, jobs, the
model registry, grid, png, errors, config, images, analysis, accentuation,
datasets and examples), which imports nothing of the
rooms at run time; `main.py` composes them and only `command.py` imports it.

TensorFlow is imported only by the engine, quietly (see engine/tf.py);
its C++ log level is set to warnings and above here, before that import,
unless FILTERCAST_TF_LOG=1 or TF_CPP_MIN_LOG_LEVEL is already set.
"""

import os

if os.environ.get("FILTERCAST_TF_LOG", "").lower() not in ("1", "true", "yes"):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # warnings and info off, errors on


def __getattr__(name: str) -> str:
    """`__version__`, read from the installed metadata when first asked for."""
    if name != "__version__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from filtercast import installed_version

    return installed_version()
