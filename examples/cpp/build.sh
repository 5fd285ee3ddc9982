#!/usr/bin/env bash
# Build build/classify from ../../proto with Debian's gRPC and protobuf packages:
#   apt-get install -y g++ pkg-config libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
set -euo pipefail
cd "$(dirname "$0")"
for tool in protoc grpc_cpp_plugin pkg-config g++; do
  command -v "$tool" >/dev/null || { echo "build.sh: $tool is missing; install the packages listed at the top of this script" >&2; exit 1; }
done
proto_root=../../proto
mkdir -p build/gen
protoc -I "$proto_root" --cpp_out=build/gen --grpc_out=build/gen \
  --plugin=protoc-gen-grpc="$(command -v grpc_cpp_plugin)" edgetune/v1/inference.proto
g++ -std=c++17 -O2 -I build/gen classify.cc \
  build/gen/edgetune/v1/inference.pb.cc build/gen/edgetune/v1/inference.grpc.pb.cc \
  -o build/classify $(pkg-config --cflags --libs grpc++ protobuf)
echo "built $(pwd)/build/classify"
