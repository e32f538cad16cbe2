"""The Prometheus /metrics endpoint, served by aiohttp on the server's event loop.

No thread per connection (prometheus_client's own server starts one for each,
with no read timeout): a connection is a coroutine, idle ones are closed
after `keepalive_timeout`, and rendering the metrics runs in the default
executor so a slow scrape never blocks the gRPC event loop.
"""

import asyncio

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

KEEPALIVE_SECONDS = 15.0


async def serve_metrics(registry: CollectorRegistry, host: str, port: int) -> web.AppRunner:
    """Start serving GET /metrics on host:port; stop it with `await runner.cleanup()`."""

    async def metrics(request: web.Request) -> web.Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        body = await asyncio.get_running_loop().run_in_executor(None, encoder, registry)
        return web.Response(body=body, headers={"Content-Type": content_type})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(
        app, access_log=None, handle_signals=False, keepalive_timeout=KEEPALIVE_SECONDS
    )
    await runner.setup()
    await web.TCPSite(runner, host.strip("[]"), port, backlog=128).start()
    return runner
