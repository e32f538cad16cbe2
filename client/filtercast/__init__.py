"""Generated protobuf and gRPC stubs of the filtercast wire contract (`make proto`)."""
