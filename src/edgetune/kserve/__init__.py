"""Generated protobuf and gRPC modules for the KServe v2 protocol (package `inference`)."""
