"""Drive `batchling serve` with the official openai package, as a user's code would.

    python client_test.py BASE_URL KEY_A KEY_B WORKDIR

Exits 0 and prints `OK` when every check passes; any failed check raises (exit 1).
The server's upstream should answer slowly enough (e.g. the fake provider with
--latency-ms 50 and serve --concurrency 2) that a 300-request batch is still
running when it is cancelled.
"""

import json
import sys
import time
from pathlib import Path

import openai
from openai import OpenAI

base_url, key_a, key_b, workdir = sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4])
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

print("OK")
