"""The gRPC server: servicers that translate protobuf, interceptors, health and shutdown."""
