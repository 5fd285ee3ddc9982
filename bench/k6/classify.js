// k6 load test: edgetune.v1.Inference/Classify over gRPC on loopback, bounded in time.
// Run by bench/load_test.py, which starts the server and passes ADDRESS, MODEL, TEXT.
import grpc from "k6/net/grpc";
import { check } from "k6";

const client = new grpc.Client();
client.load([`${__ENV.PROTO_ROOT}`], "edgetune/v1/inference.proto");

export const options = {
  scenarios: {
    classify: {
      executor: "constant-vus",
      vus: Number(__ENV.VUS || 8),
      duration: __ENV.DURATION || "20s",
    },
  },
  thresholds: {
    checks: ["rate==1.0"], // every call answered OK
  },
  summaryTrendStats: ["med", "p(99)", "max"],
};

export default () => {
  if (__ITER === 0) {
    client.connect(__ENV.ADDRESS, { plaintext: true });
  }
  const reply = client.invoke("edgetune.v1.Inference/Classify", {
    model: __ENV.MODEL,
    inputs: [{ text: __ENV.TEXT }],
    top_k: 1,
  });
  check(reply, {
    "status is OK": (r) => r && r.status === grpc.StatusOK,
    "one result": (r) => r && r.message && r.message.results.length === 1,
  });
};
