"""Drive `batchling serve` with the official openai package, as a user's code would.

    python client_test.py BASE_URL KEY_A KEY_B WORKDIR MOCK_URL

Exits 0 and prints `OK` when every check passes; any failed check raises (exit 1).
The server's upstream should answer slowly enough (e.g. the fake provider with
--latency-ms 50 and serve --concurrency 2) that a 300-request batch is still
running when it is cancelled, and its upload cap should be 2 MB
(serve --max-upload-mb 2). MOCK_URL is the fake provider's base URL: its
answers are checked against the SDK's types.
"""

import json
import sys
import time
from pathlib import Path

import openai
from openai import OpenAI

base_url, key_a, key_b, workdir, mock_url = sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4]), sys.argv[5]
client = OpenAI(base_url=base_url, api_key=key_a, max_retries=0)
other = OpenAI(base_url=base_url, api_key=key_b, max_retries=0)
TERMINAL = {"completed", "failed", "expired", "cancelled"}


def write_requests(name, prefix, n):
    path = workdir / name
    with path.open("w") as f:
        for i in range(n):
            body = {
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": f"question {i}"}],
                "max_tokens": 8,
            }
            line = {"custom_id": f"{prefix}{i}", "method": "POST", "url": "/v1/chat/completions", "body": body}
            f.write(json.dumps(line) + "\n")
    return path


def submit(path, **extra):
    with path.open("rb") as f:
        up = client.files.create(file=f, purpose="batch")
    assert up.object == "file" and up.purpose == "batch" and up.status == "processed", up
    assert up.filename == path.name and up.bytes == path.stat().st_size, up
    batch = client.batches.create(
        input_file_id=up.id, endpoint="/v1/chat/completions", completion_window="24h", **extra
    )
    assert batch.status == "validating", batch
    assert batch.request_counts is None or batch.request_counts.total == 0, batch
    return up, batch


def wait(batch_id, deadline=120):
    end = time.time() + deadline
    while time.time() < end:
        b = client.batches.retrieve(batch_id)
        if b.status in TERMINAL:
            return b
        time.sleep(0.1)
    raise AssertionError(f"batch {batch_id} did not finish in {deadline}s")


# 1. Upload, create, poll to completion, download and parse the results.
path = write_requests("main.jsonl", "req-", 25)
up, batch = submit(path, metadata={"purpose": "sdk-test"})
done = wait(batch.id)
assert done.status == "completed", done
assert done.request_counts.total == 25 and done.request_counts.completed == 25, done.request_counts
assert done.request_counts.failed == 0 and done.error_file_id is None, done
assert done.metadata == {"purpose": "sdk-test"}, done.metadata
assert done.completed_at >= done.in_progress_at >= done.created_at, done
assert done.usage.input_tokens > 0 and done.usage.total_tokens > done.usage.input_tokens, done.usage
out_file = client.files.retrieve(done.output_file_id)
assert out_file.purpose == "batch_output", out_file
lines = [json.loads(l) for l in client.files.content(done.output_file_id).text.splitlines()]
assert sorted(l["custom_id"] for l in lines) == sorted(f"req-{i}" for i in range(25)), lines
for l in lines:
    assert l["error"] is None and l["response"]["status_code"] == 200, l
    assert l["response"]["body"]["choices"][0]["message"]["content"], l
# write_to_file, as the docs show it.
client.files.content(done.output_file_id).write_to_file(workdir / "results.jsonl")
assert len((workdir / "results.jsonl").read_text().splitlines()) == 25

# 2. Auto-pagination across several pages (limit 2 per page).
extra = [submit(write_requests(f"small{i}.jsonl", f"s{i}-", 2))[1].id for i in range(5)]
listed = [b.id for b in client.batches.list(limit=2)]
assert len(listed) == len(set(listed)) == 6, listed
assert set(listed) == set(extra) | {batch.id}, listed
assert listed[0] == extra[-1], "newest first"
files = [f.id for f in client.files.list(limit=3)]
assert len(files) == len(set(files)) and up.id in files and done.output_file_id in files, files
batch_files = [f.id for f in client.files.list(purpose="batch")]
assert done.output_file_id not in batch_files and up.id in batch_files
for b in extra:
    assert wait(b).status == "completed"

# 3. Cancel a running batch: it keeps what finished, the rest gets batch_cancelled.
_, slow = submit(write_requests("slow.jsonl", "slow-", 300))
while client.batches.retrieve(slow.id).status == "validating":
    time.sleep(0.05)
cancelling = client.batches.cancel(slow.id)
assert cancelling.status in ("cancelling", "cancelled"), cancelling
cancelled = wait(slow.id)
assert cancelled.status == "cancelled" and cancelled.cancelled_at, cancelled
counts = cancelled.request_counts
assert counts.completed + counts.failed == counts.total == 300, counts
assert counts.failed > 0, counts
errors = [json.loads(l) for l in client.files.content(cancelled.error_file_id).text.splitlines()]
assert len(errors) == counts.failed and all(e["error"]["code"] == "batch_cancelled" for e in errors)
assert client.batches.cancel(slow.id).status == "cancelled", "cancelling twice is fine"

# 4. Retrieve and delete a file.
assert client.files.retrieve(up.id).id == up.id
deleted = client.files.delete(up.id)
assert deleted.deleted is True and deleted.id == up.id, deleted
try:
    client.files.retrieve(up.id)
    raise AssertionError("a deleted file must be gone")
except openai.NotFoundError:
    pass

# 5. Unknown ids, another client's objects, a bad key.
for call in (
    lambda: client.batches.retrieve("batch_00000000000000000000000000000000"),
    lambda: client.files.content("file-doesnotexist"),
    lambda: client.batches.cancel("batch_nope"),
    lambda: other.batches.retrieve(batch.id),
    lambda: other.files.content(done.output_file_id),
):
    try:
        call()
        raise AssertionError("expected 404")
    except openai.NotFoundError as e:
        assert e.body and "message" in e.body, e.body
try:
    OpenAI(base_url=base_url, api_key="not-a-key", max_retries=0).files.list()
    raise AssertionError("expected 401")
except openai.AuthenticationError as e:
    assert "not-a-key" not in str(e)
try:
    client.batches.create(input_file_id=done.output_file_id, endpoint="/v1/chat/completions", completion_window="24h")
    raise AssertionError("a batch_output file is not a batch input")
except openai.BadRequestError as e:
    assert e.param == "input_file_id", e

# 6. Refusals before the body is read reach a client still sending it: a
# wrong key on a 20 MB upload, and an upload over the 2 MB cap, each 30 times
# (a reset connection shows as APIConnectionError instead).
big = workdir / "big.jsonl"
with big.open("wb") as f:
    line = (json.dumps({"custom_id": "x", "method": "POST", "url": "/v1/chat/completions", "body": {}}) + "\n").encode()
    f.write(line * (20 * 1024 * 1024 // len(line) + 1))
wrong = OpenAI(base_url=base_url, api_key="not-a-key", max_retries=0)
for i in range(30):
    try:
        with big.open("rb") as f:
            wrong.files.create(file=f, purpose="batch")
        raise AssertionError("expected 401")
    except openai.AuthenticationError as e:
        assert e.status_code == 401, e
for i in range(30):
    try:
        with big.open("rb") as f:
            client.files.create(file=f, purpose="batch")
        raise AssertionError("expected 413")
    except openai.APIStatusError as e:
        assert e.status_code == 413 and e.code == "file_too_large", (i, e)

# 7. Purposes a File object cannot carry are refused, naming the purpose.
try:
    client.files.create(file=("e.jsonl", b"{}\n"), purpose="evals")
    raise AssertionError("purpose evals must be refused")
except openai.BadRequestError as e:
    assert e.param == "purpose" and "evals" in str(e), e
for f in client.files.list():
    assert f.purpose in ("assistants", "assistants_output", "batch", "batch_output", "fine-tune", "fine-tune-results", "vision", "user_data"), f

# 8. The fake provider's answers are what the real API returns, checked with
# the SDK's types: directly, and as bodies of batch output lines.
from openai.types import CreateEmbeddingResponse
from openai.types.chat import ChatCompletion
from openai.types.responses import Response

# Fields the real API always returns, null or not (beyond the SDK's required).
ALWAYS = {
    Response: ["id", "object", "created_at", "status", "error", "incomplete_details", "instructions",
               "max_output_tokens", "model", "output", "parallel_tool_calls", "previous_response_id",
               "reasoning", "store", "temperature", "text", "tool_choice", "tools", "top_p", "truncation",
               "usage", "user", "metadata"],
    ChatCompletion: ["id", "object", "created", "model", "choices", "usage", "system_fingerprint"],
    CreateEmbeddingResponse: ["object", "data", "model", "usage"],
}


def check_type(kind, body):
    required = [f.alias or n for n, f in kind.model_fields.items() if f.is_required()]
    missing = [n for n in set(required) | set(ALWAYS[kind]) if n not in body]
    assert not missing, f"{kind.__name__} misses {missing}: {body}"
    parsed = kind.model_validate(body, strict=False)
    if kind is Response:
        usage = body["usage"]
        assert "cached_tokens" in usage["input_tokens_details"], usage
        assert "reasoning_tokens" in usage["output_tokens_details"], usage
        msg = parsed.output[0]
        assert msg.type == "message" and msg.role == "assistant", msg
        assert msg.content[0].type == "output_text" and msg.content[0].annotations == [], msg
        assert parsed.output_text, parsed
    return parsed


# serve's own objects, as the SDK's types.
from openai.types import Batch, FileObject

Batch.model_validate(client.batches.with_raw_response.retrieve(done.id).http_response.json())
FileObject.model_validate(client.files.with_raw_response.retrieve(done.output_file_id).http_response.json())

fake = OpenAI(base_url=mock_url, api_key="unused", max_retries=0)
raw = fake.responses.with_raw_response.create(model="gpt-4o-mini", input="hello there", instructions="be brief")
check_type(Response, raw.http_response.json())
raw = fake.responses.with_raw_response.create(model="gpt-4o-mini", input="one two three four five", max_output_tokens=16, metadata={"k": "v"})
r = check_type(Response, raw.http_response.json())
assert r.metadata == {"k": "v"}, r
raw = fake.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
check_type(ChatCompletion, raw.http_response.json())
raw = fake.embeddings.with_raw_response.create(model="text-embedding-3-small", input=["a", "b"])
check_type(CreateEmbeddingResponse, raw.http_response.json())

for endpoint, kind, body in (
    ("/v1/responses", Response, {"model": "gpt-4o-mini", "input": "hello"}),
    ("/v1/embeddings", CreateEmbeddingResponse, {"model": "text-embedding-3-small", "input": "hello"}),
    ("/v1/chat/completions", ChatCompletion, {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}),
):
    path = workdir / f"typed{endpoint.replace('/', '_')}.jsonl"
    path.write_text("".join(json.dumps({"custom_id": f"t{i}", "method": "POST", "url": endpoint, "body": body}) + "\n" for i in range(3)))
    with path.open("rb") as f:
        up = client.files.create(file=f, purpose="batch")
    b = wait(client.batches.create(input_file_id=up.id, endpoint=endpoint, completion_window="24h").id)
    assert b.status == "completed" and b.request_counts.completed == 3, b
    for l in client.files.content(b.output_file_id).text.splitlines():
        check_type(kind, json.loads(l)["response"]["body"])

print("OK")
