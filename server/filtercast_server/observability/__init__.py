"""The observability room: Prometheus metrics, their HTTP endpoint, and logs.

`metrics` declares every metric and implements the engine's and scheduler's
observer protocols; `metrics_http` serves /metrics; `logs` configures JSON
logging and throttles the lines a client can cause. May import the TF-free
core only; never `engine`, `serving` or the composition root.
"""
