#!/usr/bin/env node
// An edgetune client in Node.js, built only from the .proto files in ../../proto.
//
//   node client.js classify --address 127.0.0.1:50051 --model NAME TEXT...
//   node client.js watch    --address 127.0.0.1:50051 JOB_ID
//   node client.js finetune --address 127.0.0.1:50051 --base DIR --data FILE.jsonl \
//       --task text-classification --model NAME [--epochs N --lr X] TEXT...
//
// classify prints one JSON object per input ({text, label, score, scores});
// watch prints one JSON object per job event until the job ends;
// finetune uploads a local base model folder and a data set, fine-tunes NAME from them,
// follows the job, then classifies the TEXTs with the new model (one JSON object each).
"use strict";

const crypto = require("node:crypto");
const fs = require("node:fs");
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
    else if (argv[i] === "--base") args.base = argv[++i];
    else if (argv[i] === "--data") args.data = argv[++i];
    else if (argv[i] === "--task") args.task = argv[++i];
    else if (argv[i] === "--epochs") args.epochs = Number(argv[++i]);
    else if (argv[i] === "--lr") args.lr = Number(argv[++i]);
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

// Files a base takes: config, tokenizer and preprocessor files, safetensors weights.
const BASE_FILE = /\.(json|txt|model|safetensors)$/i;
const CHUNK = 1 << 20;

function call(client, method, request) {
  return new Promise((resolve, reject) =>
    client[method](request, (error, reply) => (error ? reject(error) : resolve(reply))));
}

function upload(client, method, messages) {
  // A client-streaming call: write every message, then wait for the one answer.
  return new Promise((resolve, reject) => {
    const stream = client[method]((error, reply) => (error ? reject(error) : resolve(reply)));
    for (const message of messages) stream.write(message);
    stream.end();
  });
}

function* baseMessages(name, folder, files) {
  yield { header: { name, files } };
  for (const file of files) {
    const data = fs.readFileSync(path.join(folder, file.name));
    for (let at = 0; at < data.length; at += CHUNK) {
      yield { chunk: { file: file.name, data: data.subarray(at, at + CHUNK) } };
    }
  }
}

async function finetune(v1, args) {
  if (!args.base || !args.data || !args.model || !args.task) {
    console.error("usage: node client.js finetune --base DIR --data FILE --task TASK --model NAME TEXT...");
    process.exit(2);
  }
  const credentials = grpc.credentials.createInsecure();
  const jobs = new v1.FineTuning(args.address, credentials);
  const files = fs.readdirSync(args.base).filter((name) => BASE_FILE.test(name)).sort().map((name) => {
    const data = fs.readFileSync(path.join(args.base, name));
    return { name, size_bytes: String(data.length), sha256: crypto.createHash("sha256").update(data).digest("hex") };
  });
  const digest = crypto.createHash("sha256").update(files.map((f) => `${f.name} ${f.sha256}`).join("\n")).digest("hex");
  const name = `node-${digest.slice(0, 12)}`;
  const known = await call(jobs, "ListBases", {});
  if (!known.bases.some((base) => base.name === name)) {
    await upload(jobs, "UploadBase", baseMessages(name, args.base, files));
  }
  const data = fs.readFileSync(args.data);
  const chunks = [{ header: { task: args.task, filename: path.basename(args.data) } }];
  for (let at = 0; at < data.length; at += CHUNK) chunks.push({ chunk: data.subarray(at, at + CHUNK) });
  const dataset = await upload(jobs, "UploadDataset", chunks);
  const hyperparameters = {};
  if (args.epochs) hyperparameters.epochs = args.epochs;
  if (args.lr) hyperparameters.learning_rate = args.lr;
  const job = await call(jobs, "CreateJob", {
    task: args.task, base_path: name, dataset_id: dataset.id, model_name: args.model,
    hyperparameters, auto_promote: true,
  });
  console.log(JSON.stringify({ base: name, dataset: dataset.id, job: job.id }));
  await new Promise((resolve, reject) => {
    const stream = jobs.WatchJob({ id: job.id, after_sequence: 0 });
    stream.on("data", () => {});
    stream.on("error", reject);
    stream.on("end", resolve);
  });
  const final = await call(jobs, "GetJob", { id: job.id });
  if (final.state !== "JOB_STATE_SUCCEEDED") throw new Error(`job ${job.id} ended ${final.state}: ${final.error}`);
  const inference = new v1.Inference(args.address, credentials);
  const reply = await call(inference, "Classify", {
    model: args.model, inputs: args.rest.map((text) => ({ text })), top_k: 1,
  });
  reply.results.forEach((result, i) => {
    console.log(JSON.stringify({ text: args.rest[i], label: result.labels[0].label,
      score: result.labels[0].score, version: reply.version }));
  });
  jobs.close();
  inference.close();
}

const [command, ...rest] = process.argv.slice(2);
const v1 = loadServices();
if (command === "classify") classify(v1, parseArgs(rest));
else if (command === "watch") watch(v1, parseArgs(rest));
else if (command === "finetune") finetune(v1, parseArgs(rest)).catch(fail);
else {
  console.error("usage: node client.js classify|watch|finetune ...");
  process.exit(2);
}
