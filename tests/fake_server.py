"""A stand-in filtercast server for client tests: no TensorFlow, starts in a second.

    python tests/fake_server.py PORT MODE

MODE: `hang` answers nothing; `one` sends Accepted, then nothing; `answer`
sends Accepted and a Summary. It prints "up" once listening and "got" when a
VisualizeFilters call arrives, so a test can kill it at the right moment.
"""

import sys
import time
from concurrent import futures

import grpc

from filtercast.v1 import filtercast_pb2 as pb
from filtercast.v1 import filtercast_pb2_grpc as pb_grpc


class Servicer(pb_grpc.FilterVisualizerServiceServicer):
    def __init__(self, mode: str) -> None:
        self.mode = mode

    def VisualizeFilters(self, request, context):  # noqa: N802
        print("got", flush=True)
        if self.mode in ("one", "answer"):
            yield pb.VisualizeFiltersResponse(accepted=pb.Accepted(request_id="fake"))
        if self.mode == "answer":
            yield pb.VisualizeFiltersResponse(summary=pb.Summary(kept=0))
            return
        time.sleep(3600)


def main() -> None:
    port, mode = int(sys.argv[1]), sys.argv[2]
    server = grpc.server(futures.ThreadPoolExecutor(4))
    pb_grpc.add_FilterVisualizerServiceServicer_to_server(Servicer(mode), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print("up", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
