// Drive `batchling serve` with the official `openai` npm package, as a user's code would.
//
//     node client_test.mjs SDK_DIR BASE_URL KEY_A KEY_B WORKDIR
//
// SDK_DIR holds node_modules/openai (scripts/openai-node/setup.sh installs it). Exits 0 and
// prints `OK` when every check passes; a failed check throws (exit 1). The server should run
// with an upstream slow enough that a 300-request batch is still running when it is cancelled
// (the fake provider with --latency-ms 50, serve --concurrency 2) and with --max-upload-mb 2.

import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

const [sdkDir, baseURL, keyA, keyB, workdir] = process.argv.slice(2);
const pkg = path.join(sdkDir, "node_modules", "openai");
const { default: OpenAI } = await import(pathToFileURL(path.join(pkg, "index.mjs")).href);
const version = JSON.parse(fs.readFileSync(path.join(pkg, "package.json"), "utf8")).version;
console.log(`openai ${version} on node ${process.version}`);

const client = new OpenAI({ baseURL, apiKey: keyA, maxRetries: 0 });
const other = new OpenAI({ baseURL, apiKey: keyB, maxRetries: 0 });
const TERMINAL = new Set(["completed", "failed", "expired", "cancelled"]);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function writeRequests(name, prefix, n) {
  const file = path.join(workdir, name);
  const lines = [];
  for (let i = 0; i < n; i++) {
    const body = { model: "gpt-4o-mini", messages: [{ role: "user", content: `question ${i}` }], max_tokens: 8 };
    lines.push(JSON.stringify({ custom_id: `${prefix}${i}`, method: "POST", url: "/v1/chat/completions", body }));
  }
  fs.writeFileSync(file, lines.join("\n") + "\n");
  return file;
}

async function submit(file) {
  const up = await client.files.create({ file: fs.createReadStream(file), purpose: "batch" });
  assert.equal(up.object, "file");
  assert.equal(up.purpose, "batch");
  assert.equal(up.filename, path.basename(file));
  assert.equal(up.bytes, fs.statSync(file).size);
  const batch = await client.batches.create({
    input_file_id: up.id,
    endpoint: "/v1/chat/completions",
    completion_window: "24h",
  });
  assert.equal(batch.status, "validating");
  return [up, batch];
}

async function wait(id, deadlineMs = 120_000) {
  const end = Date.now() + deadlineMs;
  while (Date.now() < end) {
    const b = await client.batches.retrieve(id);
    if (TERMINAL.has(b.status)) return b;
    await sleep(100);
  }
  throw new Error(`batch ${id} did not finish in ${deadlineMs} ms`);
}

/// Run `call`, which must fail; return the error.
async function failure(call, what) {
  try {
    await call();
  } catch (e) {
    return e;
  }
  throw new Error(`expected ${what}`);
}

// 1. Upload, create, poll to completion, download and parse the output.
const [up, batch] = await submit(writeRequests("main.jsonl", "req-", 25));
const done = await wait(batch.id);
assert.equal(done.status, "completed");
assert.equal(done.request_counts.total, 25);
assert.equal(done.request_counts.completed, 25);
assert.equal(done.error_file_id, null);
const text = await (await client.files.content(done.output_file_id)).text();
const lines = text.trim().split("\n").map((l) => JSON.parse(l));
assert.deepEqual(lines.map((l) => l.custom_id).sort(), [...Array(25).keys()].map((i) => `req-${i}`).sort());
for (const l of lines) {
  assert.equal(l.error, null);
  assert.equal(l.response.status_code, 200);
  assert.ok(l.response.body.choices[0].message.content);
}

// 2. Auto-pagination across pages.
const extra = [];
for (let i = 0; i < 5; i++) extra.push((await submit(writeRequests(`small${i}.jsonl`, `s${i}-`, 2)))[1].id);
const listed = [];
for await (const b of client.batches.list({ limit: 2 })) listed.push(b.id);
assert.equal(listed.length, 6);
assert.equal(new Set(listed).size, 6);
assert.equal(listed[0], extra[extra.length - 1], "newest first");
const files = [];
for await (const f of client.files.list({ limit: 3 })) files.push(f.id);
assert.equal(new Set(files).size, files.length);
assert.ok(files.includes(up.id) && files.includes(done.output_file_id));
for (const id of extra) assert.equal((await wait(id)).status, "completed");

// 3. Cancel a running batch: what finished is kept, the rest is batch_cancelled.
const [, slow] = await submit(writeRequests("slow.jsonl", "slow-", 300));
while ((await client.batches.retrieve(slow.id)).status === "validating") await sleep(50);
const cancelling = await client.batches.cancel(slow.id);
assert.ok(["cancelling", "cancelled"].includes(cancelling.status));
const cancelled = await wait(slow.id);
assert.equal(cancelled.status, "cancelled");
const counts = cancelled.request_counts;
assert.equal(counts.completed + counts.failed, 300);
assert.ok(counts.failed > 0);
const errors = (await (await client.files.content(cancelled.error_file_id)).text()).trim().split("\n");
assert.equal(errors.length, counts.failed);
assert.ok(errors.every((l) => JSON.parse(l).error.code === "batch_cancelled"));

// 4. Another key's objects are 404s.
const notFound = await failure(() => other.batches.retrieve(batch.id), "404");
assert.ok(notFound instanceof OpenAI.NotFoundError, String(notFound));

// 5. Refusals before the body is read reach a client still sending it: a wrong key on a
// 20 MB upload (30 times) must be an AuthenticationError, an upload over the 2 MB cap
// (30 times) a 413 APIError; a reset connection would show as APIConnectionError.
const big = path.join(workdir, "big.jsonl");
const line = JSON.stringify({ custom_id: "x", method: "POST", url: "/v1/chat/completions", body: {} }) + "\n";
fs.writeFileSync(big, line.repeat(Math.ceil((20 << 20) / line.length)));
const wrong = new OpenAI({ baseURL, apiKey: "not-a-key", maxRetries: 0 });
for (let i = 0; i < 30; i++) {
  const e = await failure(() => wrong.files.create({ file: fs.createReadStream(big), purpose: "batch" }), "401");
  assert.ok(e instanceof OpenAI.AuthenticationError, `try ${i}: ${e.constructor.name}: ${e.message}`);
  assert.ok(!String(e.message).includes("not-a-key"));
}
for (let i = 0; i < 30; i++) {
  const e = await failure(() => client.files.create({ file: fs.createReadStream(big), purpose: "batch" }), "413");
  assert.ok(!(e instanceof OpenAI.APIConnectionError), `try ${i}: ${e.constructor.name}: ${e.message}`);
  assert.ok(e instanceof OpenAI.APIError, `try ${i}: ${e}`);
  assert.equal(e.status, 413, `try ${i}: ${e.message}`);
  assert.equal(e.code, "file_too_large");
}

// 6. A purpose no File object can carry is refused.
const evals = path.join(workdir, "evals.jsonl");
fs.writeFileSync(evals, "{}\n");
const bad = await failure(() => client.files.create({ file: fs.createReadStream(evals), purpose: "evals" }), "400");
assert.ok(bad instanceof OpenAI.BadRequestError, String(bad));
assert.equal(bad.param, "purpose");

// 7. Cancelling twice is fine; the file still lists after everything above.
assert.equal((await client.batches.cancel(slow.id)).status, "cancelled");
assert.equal((await client.files.retrieve(up.id)).id, up.id);

console.log("OK");
