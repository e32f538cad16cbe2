"""filtercast.v1 stubs, generated from proto/filtercast/v1/filtercast.proto by `make proto`."""
