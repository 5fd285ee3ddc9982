"""Generated protobuf and gRPC modules for the edgetune.v1 API (see proto/edgetune/v1)."""
