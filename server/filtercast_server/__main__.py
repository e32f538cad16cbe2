"""`python -m filtercast_server`: run the gRPC service."""

from filtercast_server.main import main

main()
