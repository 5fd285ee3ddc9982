#!/usr/bin/env node
// An edgetune client in Node.js, built only from the .proto files in ../../proto.
//
//   node client.js classify --address 127.0.0.1:50051 --model NAME TEXT...
//   node client.js watch    --address 127.0.0.1:50051 JOB_ID
//
// classify prints one JSON object per input ({text, label, score, scores});
// watch prints one JSON object per job event until the job ends.
"use strict";

const path = require("node:path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const PROTO_ROOT = path.resolve(__dirname, "..", "..", "proto");

function loadServices() {
  const definition = protoLoader.loadSync(
    ["edgetune/v1/inference.proto", "edgetune/v1/finetuning.proto"],
    { includeDirs: [PROTO_ROOT], keepCase: true, longs: String, enums: String, defaults: true, oneofs: true },
  );
  return grpc.loadPackageDefinition(definition).edgetune.v1;
}

function parseArgs(argv) {
  const args = { address: process.env.EDGETUNE_ADDRESS || "127.0.0.1:50051", rest: [] };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--address") args.address = argv[++i];
    else if (argv[i] === "--model") args.model = argv[++i];
    else args.rest.push(argv[i]);
  }
  return args;
}

function fail(error) {
  // gRPC errors carry a status code name and the server's plain message.
  const code = error.code !== undefined ? grpc.status[error.code] : "ERROR";
  console.error(`error: ${code}: ${error.details || error.message}`);
  process.exit(1);
}

function classify(v1, args) {
  if (!args.model || args.rest.length === 0) {
    console.error("usage: node client.js classify --model NAME TEXT...");
    process.exit(2);
  }
  const client = new v1.Inference(args.address, grpc.credentials.createInsecure());
  const request = { model: args.model, inputs: args.rest.map((text) => ({ text })), top_k: 0 };
  client.Classify(request, (error, reply) => {
    if (error) fail(error);
    reply.results.forEach((result, i) => {
      const scores = Object.fromEntries(result.labels.map((s) => [s.label, s.score]));
      const best = result.labels[0];
      console.log(JSON.stringify({ text: args.rest[i], label: best.label, score: best.score, scores,
        model: reply.model, version: reply.version }));
    });
    client.close();
  });
}

function watch(v1, args) {
  if (args.rest.length !== 1) {
    console.error("usage: node client.js watch JOB_ID");
    process.exit(2);
  }
  const client = new v1.FineTuning(args.address, grpc.credentials.createInsecure());
  const stream = client.WatchJob({ id: args.rest[0], after_sequence: 0 });
  stream.on("data", (event) => {
    console.log(JSON.stringify({ sequence: Number(event.sequence), state: event.state,
      message: event.message, step: Number(event.progress.step),
      total_steps: Number(event.progress.total_steps), metrics: event.metrics }));
  });
  stream.on("error", fail);
  stream.on("end", () => client.close());
}

const [command, ...rest] = process.argv.slice(2);
const v1 = loadServices();
if (command === "classify") classify(v1, parseArgs(rest));
else if (command === "watch") watch(v1, parseArgs(rest));
else {
  console.error("usage: node client.js classify|watch ...");
  process.exit(2);
}
