// k6 load test of the KServe v2 protocol (inference.GRPCInferenceService) over loopback gRPC:
// RPC=infer sends ModelInfer with one text a call (TEXT; with TEXT_ALT set, each virtual
// user alternates between the two, so half the calls in flight carry each); RPC=live sends
// ServerLive, a call that does no work (the floor of gRPC and the server's own per-call
// cost). Bounded in time. Run by bench/latency.py, which starts the server and passes
// ADDRESS, MODEL, TEXT, VUS.
import grpc from "k6/net/grpc";
import encoding from "k6/encoding";
import { check } from "k6";

const client = new grpc.Client();
client.load([`${__ENV.PROTO_ROOT}`], "edgetune/kserve/grpc_predict_v2.proto");

export const options = {
  scenarios: {
    load: {
      executor: "constant-vus",
      vus: Number(__ENV.VUS || 1),
      duration: __ENV.DURATION || "10s",
    },
  },
  thresholds: {
    checks: ["rate==1.0"], // every call answered OK
  },
  summaryTrendStats: ["avg", "med", "p(99)", "max"],
};

const live = __ENV.RPC === "live";
const method = live
  ? "inference.GRPCInferenceService/ServerLive"
  : "inference.GRPCInferenceService/ModelInfer";
const texts = __ENV.TEXT_ALT ? [__ENV.TEXT, __ENV.TEXT_ALT] : [__ENV.TEXT];
const requests = texts.map((text) => ({
  model_name: __ENV.MODEL,
  inputs: [
    {
      name: "text",
      datatype: "BYTES",
      shape: [1],
      contents: { bytes_contents: [encoding.b64encode(text)] },
    },
  ],
}));

export default () => {
  if (__ITER === 0) {
    client.connect(__ENV.ADDRESS, { plaintext: true });
  }
  const request = live ? {} : requests[(__VU + __ITER) % requests.length];
  const reply = client.invoke(method, request);
  check(reply, {
    "status is OK": (r) => r && r.status === grpc.StatusOK,
    "answered": (r) => r && r.message && (live ? r.message.live : r.message.outputs.length === 2),
  });
};
