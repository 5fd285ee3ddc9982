#!/usr/bin/env bash
# Build build/classify from ../../proto with Debian's Go toolchain and gRPC-Go packages
# (no module downloads: GOPATH mode over /usr/share/gocode):
#   apt-get install -y golang-go golang-google-grpc-dev golang-google-protobuf-dev protoc-gen-go protoc-gen-go-grpc protobuf-compiler
set -euo pipefail
cd "$(dirname "$0")"
for tool in go protoc protoc-gen-go protoc-gen-go-grpc; do
  command -v "$tool" >/dev/null || { echo "build.sh: $tool is missing; install the packages listed at the top of this script" >&2; exit 1; }
done
proto_root=../../proto
gopath=$PWD/build/gopath
rm -rf "$gopath/src/github.com/edgetune" "$gopath/src/edgetune-example"
mkdir -p "$gopath/src/edgetune-example"
# The protos' go_package options name the import paths; the files land under them.
protoc -I "$proto_root" --go_out="$gopath/src" --go-grpc_out="$gopath/src" \
  edgetune/v1/inference.proto edgetune/kserve/grpc_predict_v2.proto
cp classify/main.go "$gopath/src/edgetune-example/"
GO111MODULE=off GOPATH="$gopath:/usr/share/gocode" GOCACHE="$PWD/build/gocache" GOFLAGS= \
  go build -o build/classify edgetune-example
echo "built $(pwd)/build/classify"
