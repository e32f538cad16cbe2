"""The one fake filtercast server, for client tests: scripted, no TensorFlow, up in a second.

    python tests/support/fake_server.py PORT MODE

MODE: `hang` answers nothing; `one` sends Accepted, then nothing; `answer`
sends Accepted and a Summary. The lying modes accept filters 0 and 1, then
break the contract: `stray` sends filter 1000000, `negative` filter -7,
`duplicate` filter 0 twice, `malformed` a live filter whose PNG is garbage,
`blank` an event with nothing set, `short` a Summary after one filter.
It prints "up" once listening and "got" when a VisualizeFilters call
arrives, so a test can kill it at the right moment.
"""

import io
import sys
import time
from concurrent import futures

import grpc
from PIL import Image

from filtercast.v1 import filtercast_pb2 as pb
from filtercast.v1 import filtercast_pb2_grpc as pb_grpc


def picture(data: bytes = b"") -> pb.Image:
    if not data:
        buffer = io.BytesIO()
        Image.new("RGB", (8, 8)).save(buffer, format="PNG")
        data = buffer.getvalue()
    return pb.Image(format=pb.IMAGE_FORMAT_PNG, data=data, width=8, height=8)


def result(index: int, data: bytes = b"") -> dict:
    return {"filter": pb.FilterResult(index=index, loss=1.0, image=picture(data), total=2)}


SUMMARY = {"summary": pb.Summary(kept=2)}
LIES = {
    "stray": [result(0), result(1_000_000), SUMMARY],
    "negative": [result(-7), result(0), SUMMARY],
    "duplicate": [result(0), result(0), SUMMARY],
    "malformed": [result(0, b"not a png"), result(1), SUMMARY],
    "blank": [result(0), {}, result(1), SUMMARY],
    "short": [result(0), SUMMARY],
}


class Servicer(pb_grpc.FilterVisualizerServiceServicer):
    def __init__(self, mode: str) -> None:
        self.mode = mode

    def VisualizeFilters(self, request, context):  # noqa: N802
        print("got", flush=True)
        if self.mode in LIES:
            yield pb.VisualizeFiltersResponse(
                accepted=pb.Accepted(request_id="liar", filters=[0, 1], filter_count=2)
            )
            yield from (pb.VisualizeFiltersResponse(**event) for event in LIES[self.mode])
            return
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
