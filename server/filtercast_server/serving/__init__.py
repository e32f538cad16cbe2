"""The serving room: the network face of the service, with no TensorFlow in it.

`front` answers the service's methods from the moment the ports open and
hands them to the `servicer` once the models are loaded; `servicer` and
`streams` are the methods themselves (decode, admit, plan, look in the
cache, submit, stream back); `wire` converts between messages and the core's
values and builds every response message; `status` writes error details;
`admission` bounds streams; `scheduler` (its vocabulary in `batching`)
batches jobs across requests on the one device thread; `analysis` answers
AnalyzeImage beside it, `examples` DatasetExamples (its indexes, built by
the core's `indexing`, run as the scheduler's background work); `interceptor` and
`auth` authenticate and count every call; `listeners`, `tls` and
`reflection` are the ports'; `gateway/` is the HTTP/JSON face and the
gallery over the same front.

May import the TF-free core, `cache` and `observability`; never `engine`
(only its types, for checking) or the composition root.
"""
