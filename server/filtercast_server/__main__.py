"""`python -m filtercast_server`: run the gRPC service."""

from filtercast_server.command import serve

serve(prog_name="python -m filtercast_server")
