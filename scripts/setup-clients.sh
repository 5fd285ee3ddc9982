#!/usr/bin/env bash
# Install the third-party clients the client tests run against the server: tritonclient in
# its own venv (it needs protobuf < 7; the server uses 7), the Node example's packages,
# the C++ example (Debian's gRPC packages), a Prometheus server that scrapes the metrics
# endpoint (Debian's prometheus) and nginx (the L7 gRPC proxy in front of two replicas);
# Debian packages are installed with apt-get when run as root. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
if [ ! -x .venv-triton/bin/python ] || ! .venv-triton/bin/python -c 'import tritonclient.grpc' 2>/dev/null; then
  "$PYTHON" -m venv .venv-triton
  .venv-triton/bin/python -m pip install --quiet "tritonclient[grpc]==2.73.0"
fi

command -v npm >/dev/null || { echo "setup-clients.sh: npm is missing (Node.js 18+ is needed)" >&2; exit 1; }
if [ ! -d examples/node/node_modules/@grpc/grpc-js ]; then
  (cd examples/node && npm ci --no-audit --no-fund --loglevel=error)
fi

# golang-github-golang-protobuf-1-5-dev: gRPC-Go's codec must know protobuf-go's messages
# (the 1.3 package Debian installs by default does not).
go_packages="golang-go golang-google-grpc-dev golang-google-protobuf-dev protoc-gen-go protoc-gen-go-grpc golang-github-golang-protobuf-1-5-dev"
if ! command -v grpc_cpp_plugin >/dev/null || ! pkg-config --exists grpc++ 2>/dev/null \
  || ! command -v prometheus >/dev/null || ! command -v protoc-gen-go-grpc >/dev/null \
  || ! command -v nginx >/dev/null \
  || ! dpkg -s golang-github-golang-protobuf-1-5-dev >/dev/null 2>&1; then
  packages="g++ pkg-config libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc"
  packages="$packages prometheus nginx-light $go_packages"
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $packages >/dev/null
  else
    echo "setup-clients.sh: the client tests need Debian's packages: sudo apt-get install -y $packages" >&2
    exit 1
  fi
fi
if [ ! -x examples/cpp/build/classify ] || [ examples/cpp/classify.cc -nt examples/cpp/build/classify ]; then
  examples/cpp/build.sh
fi
if [ ! -x examples/go/build/classify ] || [ examples/go/classify/main.go -nt examples/go/build/classify ]; then
  examples/go/build.sh
fi
