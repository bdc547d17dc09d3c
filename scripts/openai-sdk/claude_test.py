"""The official openai package against `batchling serve --provider anthropic`:
an OpenAI batch file naming a Claude model, its answers read with the SDK's types.

    python claude_test.py BASE_URL KEY WORKDIR

Exits 0 and prints `OK` when every check passes; any failed check raises (exit 1).
"""

import json
import sys
import time
from pathlib import Path

from openai import OpenAI
from openai.types import Batch
from openai.types.chat import ChatCompletion

base_url, key, workdir = sys.argv[1], sys.argv[2], Path(sys.argv[3])
client = OpenAI(base_url=base_url, api_key=key, max_retries=0)


def run(name, endpoint, lines):
    path = workdir / name
    path.write_text("".join(json.dumps(l) + "\n" for l in lines))
    with path.open("rb") as f:
        up = client.files.create(file=f, purpose="batch")
    b = client.batches.create(input_file_id=up.id, endpoint=endpoint, completion_window="24h")
    end = time.time() + 60
    while b.status not in ("completed", "failed", "expired", "cancelled"):
        assert time.time() < end, b
        time.sleep(0.05)
        b = client.batches.retrieve(b.id)
    assert b.status == "completed" and b.request_counts.completed == len(lines), b
    Batch.model_validate(client.batches.with_raw_response.retrieve(b.id).http_response.json())
    out = [json.loads(l) for l in client.files.content(b.output_file_id).text.splitlines()]
    assert [o["custom_id"] for o in out] == [l["custom_id"] for l in lines], out
    return out


chat = [
    {"custom_id": f"c{i}", "method": "POST", "url": "/v1/chat/completions",
     "body": {"model": "claude-sonnet-4-5", "max_tokens": 32, "user": "alice", "stop": ["END"],
              "messages": [{"role": "system", "content": "Be brief."},
                           {"role": "user", "content": f"question {i}"}]}}
    for i in range(4)
]
for o in run("claude_chat.jsonl", "/v1/chat/completions", chat):
    c = ChatCompletion.model_validate(o["response"]["body"])
    assert c.object == "chat.completion" and c.model == "claude-sonnet-4-5", c
    assert c.choices[0].message.role == "assistant" and c.choices[0].message.content, c
    assert c.choices[0].finish_reason in ("stop", "length"), c
    assert c.usage.prompt_tokens > 0 and c.usage.total_tokens == c.usage.prompt_tokens + c.usage.completion_tokens, c

native = [
    {"custom_id": f"n{i}", "method": "POST", "url": "/v1/messages",
     "body": {"model": "claude-haiku-4-5", "max_tokens": 16, "messages": [{"role": "user", "content": f"hi {i}"}]}}
    for i in range(2)
]
for o in run("claude_native.jsonl", "/v1/messages", native):
    body = o["response"]["body"]
    assert body["type"] == "message" and body["role"] == "assistant", body

print("OK")
