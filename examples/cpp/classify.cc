// An edgetune client in C++, generated from ../../proto with Debian's gRPC packages.
//
//   build/classify ADDRESS MODEL TEXT...
//
// Prints one line per input: the best label, a tab, its score. On an error it prints
// "error: CODE: message" (the server's gRPC status) and exits with 1.
#include <grpcpp/grpcpp.h>

#include <iostream>
#include <string>

#include "edgetune/v1/inference.grpc.pb.h"

namespace {

const char* CodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case grpc::StatusCode::NOT_FOUND: return "NOT_FOUND";
    case grpc::StatusCode::FAILED_PRECONDITION: return "FAILED_PRECONDITION";
    case grpc::StatusCode::UNAVAILABLE: return "UNAVAILABLE";
    case grpc::StatusCode::DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
    default: return "ERROR";
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    std::cerr << "usage: " << argv[0] << " ADDRESS MODEL TEXT..." << std::endl;
    return 2;
  }
  auto channel = grpc::CreateChannel(argv[1], grpc::InsecureChannelCredentials());
  auto stub = edgetune::v1::Inference::NewStub(channel);

  edgetune::v1::ClassifyRequest request;
  request.set_model(argv[2]);
  request.set_top_k(1);
  for (int i = 3; i < argc; ++i) request.add_inputs()->set_text(argv[i]);

  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  edgetune::v1::ClassifyResponse reply;
  grpc::Status status = stub->Classify(&context, request, &reply);
  if (!status.ok()) {
    std::cerr << "error: " << CodeName(status.error_code()) << ": " << status.error_message()
              << std::endl;
    return 1;
  }
  for (const auto& result : reply.results()) {
    const auto& best = result.labels(0);
    std::cout << best.label() << "\t" << best.score() << std::endl;
  }
  return 0;
}
