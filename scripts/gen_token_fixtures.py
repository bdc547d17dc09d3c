#!/usr/bin/env python3
"""Generate the token-count fixtures for batchling-core's `tokens` module.

The reference is OpenAI's Python `tiktoken` (the tokenizer the API itself uses).
The output, crates/batchling-core/tests/fixtures/tokens.json, is read by
crates/batchling-core/tests/tokens.rs, which asserts that the Rust code gives
exactly the same counts for every case.

How to rerun
------------
From the repository root:

    pip install tiktoken            # tested with tiktoken 0.14.0
    python3 scripts/gen_token_fixtures.py          # rewrites the fixture
    python3 scripts/gen_token_fixtures.py --check  # only compares, exit 1 on a difference
    cargo test -p batchling-core --test tokens

Offline cache seeding (done by this script, nothing to do by hand)
-----------------------------------------------------------------
Python tiktoken downloads `o200k_base.tiktoken` / `cl100k_base.tiktoken` from
openaipublic.blob.core.windows.net at run time, which may be blocked. It looks in
`$TIKTOKEN_CACHE_DIR/<sha1 of the blob URL>` first and checks the file's sha256.
The Rust crate tiktoken-rs ships byte-identical copies in its `assets/` folder, so
this script copies them into the cache under those sha1 names before importing
tiktoken:

* the tiktoken-rs source folder is found with `cargo metadata` (the version in
  Cargo.lock), falling back to `$CARGO_HOME/registry/src/*/tiktoken-rs-*/`
  (CARGO_HOME defaults to ~/.cargo);
* the cache is `$TIKTOKEN_CACHE_DIR` if set, else `target/tiktoken-cache/` in
  this repository (git-ignored);
* each copied file's sha256 is checked against the hash tiktoken expects.

The fixture is deterministic (fixed random seed); keep it under ~200 KB.

What the chat counts are
------------------------
`num_tokens_from_messages` and `num_tokens_for_tools` below are the cookbook's
functions (openai-cookbook, examples/How_to_count_tokens_with_tiktoken.ipynb,
commit c81359c), kept line-for-line where the cookbook defines behaviour, with
these documented differences (the same rules as the Rust code):

1. `encoding.encode(x)` is replaced by `encoding.encode_ordinary(x)`: text such as
   "<|endoftext|>" counts as plain text (the cookbook's `encode` would raise).
2. The cookbook only handles string values. Our extension, for values it would
   crash on: `content` arrays (text parts counted, image parts a constant),
   `tool_calls` / `function_call` (name + arguments), non-string scalars ignored.
3. The tool constants are picked by encoding (cl100k models get the
   gpt-3.5/gpt-4 constants, everything else the gpt-4o ones) instead of the
   cookbook's four exact model names; missing descriptions count as "", enum
   values that are not strings count as their JSON text, array types are joined
   with " | ", and nested object properties are counted one level at a time.

The script asserts the cookbook's API-verified numbers (129 / 124 prompt tokens
for the jargon example, 105 / 101 for the weather-tool example) before writing.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "crates" / "batchling-core" / "tests" / "fixtures" / "tokens.json"

BLOBS = {
    "o200k_base": (
        "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    ),
    "cl100k_base": (
        "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    ),
}

# Same constant as batchling_core::tokens::IMAGE_PART_TOKENS.
IMAGE_PART_TOKENS = 85


# --------------------------------------------------------------------------
# Cache seeding
# --------------------------------------------------------------------------


def tiktoken_rs_assets() -> Path:
    """Find tiktoken-rs's assets/ folder (the version this workspace locks)."""
    try:
        out = subprocess.run(
            ["cargo", "metadata", "--format-version", "1"],
            cwd=REPO,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        for pkg in json.loads(out)["packages"]:
            if pkg["name"] == "tiktoken-rs":
                assets = Path(pkg["manifest_path"]).parent / "assets"
                if assets.is_dir():
                    return assets
    except (OSError, subprocess.CalledProcessError, ValueError, KeyError):
        pass
    cargo_home = Path(os.environ.get("CARGO_HOME", Path.home() / ".cargo"))
    found = sorted(glob.glob(str(cargo_home / "registry" / "src" / "*" / "tiktoken-rs-*" / "assets")))
    if not found:
        sys.exit("cannot find tiktoken-rs's assets/ (run `cargo fetch` first)")
    return Path(found[-1])


def seed_tiktoken_cache() -> Path:
    cache = Path(os.environ.get("TIKTOKEN_CACHE_DIR") or REPO / "target" / "tiktoken-cache")
    cache.mkdir(parents=True, exist_ok=True)
    os.environ["TIKTOKEN_CACHE_DIR"] = str(cache)
    assets = None
    for name, (url, sha256) in BLOBS.items():
        dest = cache / hashlib.sha1(url.encode()).hexdigest()
        if dest.exists() and hashlib.sha256(dest.read_bytes()).hexdigest() == sha256:
            continue
        assets = assets or tiktoken_rs_assets()
        src = assets / f"{name}.tiktoken"
        data = src.read_bytes()
        got = hashlib.sha256(data).hexdigest()
        if got != sha256:
            sys.exit(f"{src}: sha256 {got} is not the {sha256} tiktoken expects")
        tmp = dest.with_suffix(".tmp")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    return cache


seed_tiktoken_cache()
import tiktoken  # noqa: E402  (after the cache is seeded)

ENC = {name: tiktoken.get_encoding(name) for name in BLOBS}


def is_exact(model: str) -> bool:
    """Whether tiktoken knows the model's tokenizer (and it is o200k or cl100k)."""
    if model.startswith("ft:"):
        model = model[3:].split(":")[0]
    try:
        return tiktoken.encoding_name_for_model(model) in ("o200k_base", "cl100k_base", "o200k_harmony")
    except KeyError:
        return False


def encoding_name_for(model: str) -> str:
    """tiktoken's mapping, with unknown / p50k / r50k models counted with o200k
    (batchling's `Encoding::Approximate`)."""
    if model.startswith("ft:"):  # batchling strips ft: and keeps the base model
        model = model[3:].split(":")[0]
    try:
        name = tiktoken.encoding_name_for_model(model)
    except KeyError:
        return "o200k_base"
    return name if name == "cl100k_base" else "o200k_base"


# --------------------------------------------------------------------------
# The cookbook's functions (see the module docstring for the differences)
# --------------------------------------------------------------------------


def _count_value(encoding, key, value):
    """Tokens for one message field. The cookbook does `len(encoding.encode(value))`
    for every value; strings keep exactly that (with encode_ordinary)."""
    if isinstance(value, str):
        return len(encoding.encode_ordinary(value))
    # --- extension: values the cookbook would crash on ---
    if key in ("content", "output") and isinstance(value, list):
        return sum(_count_part(encoding, p) for p in value)
    if key == "tool_calls" and isinstance(value, list):
        n = 0
        for call in value:
            if isinstance(call, dict):
                for inner in ("function", "custom"):
                    if isinstance(call.get(inner), dict):
                        n += _count_call(encoding, call[inner])
        return n
    if key == "function_call" and isinstance(value, dict):
        return _count_call(encoding, value)
    return 0


def _count_call(encoding, f):
    n = 0
    for k in ("name", "arguments", "input"):
        if isinstance(f.get(k), str):
            n += len(encoding.encode_ordinary(f[k]))
    return n


def _count_part(encoding, part):
    if isinstance(part, str):
        return len(encoding.encode_ordinary(part))
    if not isinstance(part, dict):
        return 0
    if isinstance(part.get("text"), str):
        return len(encoding.encode_ordinary(part["text"]))
    if isinstance(part.get("refusal"), str):
        return len(encoding.encode_ordinary(part["refusal"]))
    if part.get("type") in ("image_url", "input_image", "image"):
        return IMAGE_PART_TOKENS
    return 0


def num_tokens_from_messages(messages, encoding):
    # cookbook: tokens_per_message = 3, tokens_per_name = 1 for gpt-3.5-turbo-0125,
    # gpt-4-0314/0613, gpt-4-32k-*, gpt-4o-mini-2024-07-18, gpt-4o-2024-08-06
    tokens_per_message = 3
    tokens_per_name = 1
    num_tokens = 0
    for message in messages:
        num_tokens += tokens_per_message
        for key, value in message.items():
            num_tokens += _count_value(encoding, key, value)
            if key == "name" and isinstance(value, str):
                num_tokens += tokens_per_name
    num_tokens += 3  # every reply is primed with <|start|>assistant<|message|>
    return num_tokens


def tool_constants(encoding_name):
    if encoding_name == "cl100k_base":  # cookbook: "gpt-3.5-turbo", "gpt-4"
        return dict(func_init=10, prop_init=3, prop_key=3, enum_init=-3, enum_item=3, func_end=12)
    # cookbook: "gpt-4o", "gpt-4o-mini"
    return dict(func_init=7, prop_init=3, prop_key=3, enum_init=-3, enum_item=3, func_end=12)


def _type_text(t):
    if isinstance(t, str):
        return t
    if isinstance(t, list):
        return " | ".join(x for x in t if isinstance(x, str))
    return ""


def _strip_period(s):
    if not isinstance(s, str):
        return ""
    return s[:-1] if s.endswith(".") else s


def _enum_item_text(item):
    if isinstance(item, str):
        return item
    if isinstance(item, (dict, list)):
        return None
    return json.dumps(item)  # numbers, true/false, null


MAX_DEPTH = 8


def _count_properties(encoding, c, properties, depth):
    n = 0
    for key, prop in properties.items():
        n += c["prop_key"]  # Add tokens for each set property
        if not isinstance(prop, dict):
            n += len(encoding.encode_ordinary(f"{key}::"))
            continue
        p_type = _type_text(prop.get("type"))
        p_desc = _strip_period(prop.get("description"))
        if "enum" in prop:
            n += c["enum_init"]  # Add tokens if property has enum list
            if isinstance(prop["enum"], list):
                for item in prop["enum"]:
                    n += c["enum_item"]
                    text = _enum_item_text(item)
                    if text is not None:
                        n += len(encoding.encode_ordinary(text))
        line = f"{key}:{p_type}:{p_desc}"
        n += len(encoding.encode_ordinary(line))
        # extension: nested object properties (cookbook ignores them)
        if depth < MAX_DEPTH:
            nested = prop.get("properties")
            if not isinstance(nested, dict) and isinstance(prop.get("items"), dict):
                nested = prop["items"].get("properties")
            if isinstance(nested, dict):
                n += _count_properties(encoding, c, nested, depth + 1)
    return n


def num_tokens_for_tools(functions, encoding_name):
    """The cookbook's tool overhead, without the messages part (which it adds by
    calling num_tokens_from_messages). `functions` are the function objects
    (`tool["function"]`, or a Responses-style flat tool)."""
    c = tool_constants(encoding_name)
    encoding = ENC[encoding_name]
    func_token_count = 0
    if len(functions) > 0:
        for function in functions:
            func_token_count += c["func_init"]  # Add tokens for start of each function
            f_name = function.get("name") if isinstance(function.get("name"), str) else ""
            f_desc = _strip_period(function.get("description"))
            line = f_name + ":" + f_desc
            func_token_count += len(encoding.encode_ordinary(line))  # name and description
            params = function.get("parameters")
            props = params.get("properties") if isinstance(params, dict) else None
            if isinstance(props, dict) and len(props) > 0:
                func_token_count += c["prop_init"]  # Add tokens for start of each property
                func_token_count += _count_properties(encoding, c, props, 0)
        func_token_count += c["func_end"]
    return func_token_count


def tool_functions(body, responses=False):
    """The function objects of a body's `tools` (and chat's legacy `functions`)."""
    out = []
    tools = body.get("tools")
    if isinstance(tools, list):
        for t in tools:
            if not isinstance(t, dict):
                continue
            kind = t.get("type")
            if kind == "function" or kind == "custom":
                inner = t.get(kind)
                if isinstance(inner, dict):
                    out.append(inner)
                elif responses or "name" in t:
                    out.append(t)  # Responses API: flat {type, name, description, parameters}
    functions = body.get("functions")
    if not responses and isinstance(functions, list):
        out.extend(f for f in functions if isinstance(f, dict))
    return out


# --------------------------------------------------------------------------
# Per-endpoint expectations (batchling's documented rules)
# --------------------------------------------------------------------------


def max_output(body, default, endpoint):
    if endpoint in ("/v1/embeddings", "/v1/moderations"):
        return 0
    m = default
    for k in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
        if body.get(k) is not None:
            m = body[k]
            break
    if endpoint == "/v1/responses":
        return m
    n = body.get("n") or 1
    if endpoint == "/v1/completions":
        n = max(n, body.get("best_of") or 1)
        p = body["prompt"]
        prompts = 1
        if isinstance(p, list) and p and not isinstance(p[0], int):
            prompts = len(p)
        return m * n * prompts
    return m * n


def expected(endpoint, body, default):
    enc_name = encoding_name_for(body["model"])
    enc = ENC[enc_name]
    if endpoint == "/v1/chat/completions":
        n = num_tokens_from_messages(body["messages"], enc)
        n += num_tokens_for_tools(tool_functions(body), enc_name)
    elif endpoint == "/v1/responses":
        msgs = []
        if isinstance(body.get("instructions"), str):
            msgs.append({"role": "system", "content": body["instructions"]})
        inp = body.get("input")
        if isinstance(inp, str):
            msgs.append({"role": "user", "content": inp})
        elif isinstance(inp, list):
            msgs.extend(inp)
        n = num_tokens_from_messages(msgs, enc) if msgs else 0
        n += num_tokens_for_tools(tool_functions(body, responses=True), enc_name)
    elif endpoint in ("/v1/completions", "/v1/embeddings"):
        p = body["prompt" if endpoint == "/v1/completions" else "input"]
        if isinstance(p, str):
            p = [p]
        if p and isinstance(p[0], int):
            p = [p]
        n = sum(len(enc.encode_ordinary(x)) if isinstance(x, str) else len(x) for x in p)
        suffix = body.get("suffix") if endpoint == "/v1/completions" else None
        if isinstance(suffix, str):
            n += len(enc.encode_ordinary(suffix)) * max(len(p), 1)
    elif endpoint == "/v1/moderations":
        p = body["input"]
        if isinstance(p, str):
            p = [p]
        n = sum(_count_part(enc, x) for x in p)
    else:
        raise ValueError(endpoint)
    return n, max_output(body, default, endpoint)


# --------------------------------------------------------------------------
# Corpus
# --------------------------------------------------------------------------

HAND_PICKED = [
    "",
    " ",
    "Hello, world! 你好 🌍",
    "The quick brown fox jumps over the lazy dog.",
    "日本語のテキストです。東京は日本の首都です。",
    "中文文本：北京是中国的首都。我们今天去公园散步吧！",
    "한국어 텍스트입니다. 서울은 대한민국의 수도입니다.",
    "النص العربي: القاهرة هي عاصمة مصر. مرحبا بالعالم!",
    "Русский текст: Москва — столица России. Съешь же ещё этих мягких французских булок.",
    "हिन्दी पाठ: नई दिल्ली भारत की राजधानी है। नमस्ते दुनिया!",
    "עברית: ירושלים היא עיר הבירה.",
    "ภาษาไทย: กรุงเทพมหานครเป็นเมืองหลวง",
    "Ελληνικά: Η Αθήνα είναι η πρωτεύουσα.",
    "👩‍👩‍👧‍👦 👨🏽‍💻 🏳️‍🌈 🧑🏿‍🤝‍🧑🏻 ❤️‍🔥",
    "🇫🇷🇩🇪🇯🇵🇺🇸🇧🇷 flags 🏴󠁧󠁢󠁳󠁣󠁴󠁿",
    "e\u0301 a\u0300 o\u0308 n\u0303 Z\u0335\u0321\u0327a\u0334\u0306\u0308l\u0338g\u0337o\u0336",
    "zero\u200bwidth\u200cjoiner\u200dand\u2060word\u00adjoiner",
    "\ufeffBOM at the start, and\ufeffin the middle",
    "def fib(n: int) -> int:\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
    "fn main() {\n\tlet v: Vec<u64> = (0..10).map(|x| x * x).collect();\n\tprintln!(\"{v:?}\");\n}\n",
    "SELECT id, name FROM users WHERE created_at >= '2024-01-01' ORDER BY id DESC LIMIT 10;",
    '{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "n": 2, "x": [1.5e-3, null, true]}',
    "https://example.com/path/to/page?query=1&other=%20value#fragment",
    "                                                                end of spaces",
    "tabs\t\t\t\tand\n\n\n\nnewlines\n \n \n",
    "line one\r\nline two\r\n\r\nline four\r\n",
    "a" * 1000,
    "ab" * 300,
    "1234567890" * 20,
    "<|endoftext|>",
    "before <|endoftext|> after <|endofprompt|> <|fim_prefix|><|im_start|>",
    "U2FsdGVkX1+vupppZksvRf5pq5g5XjFRlipRkwB0K1Y96Qsv2Lm+31cmzaAILwyt",
    "naïve café résumé coöperate façade jalapeño Ångström",
    "I'm you're he's they've we'd she'll it's DON'T WON'T CAN'T",
    "\u00a0non-breaking\u00a0spaces\u3000ideographic\u3000space\u2003em",
    "math: ∑_{i=1}^{n} i² = n(n+1)/2, ∀x∈ℝ: x²≥0, ∞ ≈ ℵ₀",
    "\x00\x01\x02 control \x7f chars \x1b[31mred\x1b[0m",
    "𝕳𝖊𝖑𝖑𝖔 𝓦𝓸𝓻𝓵𝓭 𝟘𝟙𝟚 — astral plane letters",
    "\n",
    "\r\n\r\n\r\n",
    "   leading and trailing spaces   ",
]

PROSE = (
    "Batch processing lets you send many requests at once at a lower price. Each line of "
    "the input file is one request; the output file has one line per request, in any order. "
    "Rate limits are counted in requests per minute and tokens per minute, and the token "
    "estimate includes the maximum output the request may generate. "
)

BLOCKS = [
    (0x20, 0x7E),  # ASCII
    (0xA0, 0xFF),  # Latin-1
    (0x100, 0x17F),  # Latin Extended-A
    (0x370, 0x3FF),  # Greek
    (0x400, 0x4FF),  # Cyrillic
    (0x590, 0x5FF),  # Hebrew
    (0x600, 0x6FF),  # Arabic
    (0x900, 0x97F),  # Devanagari
    (0xE00, 0xE7F),  # Thai
    (0x300, 0x36F),  # combining marks
    (0x2000, 0x206F),  # general punctuation (incl. zero-width chars)
    (0x3040, 0x30FF),  # Hiragana, Katakana
    (0x4E00, 0x9FFF),  # CJK
    (0xAC00, 0xD7A3),  # Hangul
    (0x1F300, 0x1FAFF),  # emoji
    (0x1F1E6, 0x1F1FF),  # regional indicators
    (0xFE00, 0xFE0F),  # variation selectors
    (0x1D400, 0x1D7FF),  # math alphanumerics
]
WHITESPACE = [" ", "  ", "\t", "\n", "\r\n", "\u00a0", "\u3000", "    ", "\n\n"]


def random_texts(rng: random.Random):
    source = "".join(HAND_PICKED) + PROSE * 3
    out = []
    for _ in range(200):  # random slices of the mixed corpus
        start = rng.randrange(len(source))
        out.append(source[start : start + rng.randint(1, 240)])
    for _ in range(220):  # random code points from mixed blocks
        pieces = []
        for _ in range(rng.randint(1, 60)):
            r = rng.random()
            if r < 0.12:
                pieces.append(rng.choice(WHITESPACE))
            elif r < 0.2:
                pieces.append(str(rng.randint(0, 10**rng.randint(1, 7))))
            else:
                lo, hi = rng.choice(BLOCKS)
                pieces.append(chr(rng.randint(lo, hi)))
        out.append("".join(pieces))
    for _ in range(60):  # ASCII with letters, digits, punctuation, whitespace runs
        alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789" "'\".,;:!?-_(){}[]<>/\\|@#$%^&*+=~` \t\n\r"
        out.append("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 200))))
    for _ in range(20):  # long runs of one character class
        ch = rng.choice([" ", "\n", "a", "0", "!", "你", "é", "🙂", "\t", "-"])
        out.append(rng.choice(["", "x", "Hi "]) + ch * rng.randint(2, 400) + rng.choice(["", "y", " end"]))
    return out


# --------------------------------------------------------------------------
# Request bodies
# --------------------------------------------------------------------------

JARGON = [
    {"role": "system", "content": "You are a helpful, pattern-following assistant that translates corporate jargon into plain English."},
    {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
    {"role": "system", "name": "example_assistant", "content": "Things working well together will increase revenue."},
    {"role": "system", "name": "example_user", "content": "Let's circle back when we have more bandwidth to touch base on opportunities for increased leverage."},
    {"role": "system", "name": "example_assistant", "content": "Let's talk later when we're less busy about how to do better."},
    {"role": "user", "content": "This late pivot means we don't have time to boil the ocean for the client deliverable."},
]

WEATHER_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_current_weather",
            "description": "Get the current weather in a given location",
            "parameters": {
                "type": "object",
                "properties": {
                    "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
                    "unit": {"type": "string", "description": "The unit of temperature to return", "enum": ["celsius", "fahrenheit"]},
                },
                "required": ["location"],
            },
        },
    }
]
WEATHER_MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant that can answer to questions about the weather."},
    {"role": "user", "content": "What's the weather like in San Francisco?"},
]

NESTED_TOOL = {
    "type": "function",
    "function": {
        "name": "create_order",
        "description": "Create an order for a customer.",
        "parameters": {
            "type": "object",
            "properties": {
                "customer": {
                    "type": "object",
                    "description": "Who orders.",
                    "properties": {
                        "id": {"type": "integer", "description": "Customer id"},
                        "email": {"type": ["string", "null"], "description": "Contact e-mail."},
                    },
                },
                "items": {
                    "type": "array",
                    "description": "Order lines",
                    "items": {
                        "type": "object",
                        "properties": {
                            "sku": {"type": "string"},
                            "qty": {"type": "integer", "description": "Quantity", "enum": [1, 2, 3, 5, 10]},
                            "gift": {"type": "boolean", "enum": [True, False, None]},
                        },
                    },
                },
                "priority": {"type": "string", "enum": []},
                "note": "not an object",
            },
        },
        "strict": True,
    },
}


def chat_bodies(texts):
    rng = random.Random(7)
    bodies = []
    for model in ["gpt-3.5-turbo", "gpt-4-0613", "gpt-4", "gpt-4o", "gpt-4o-mini"]:
        bodies.append(("jargon " + model, {"model": model, "messages": JARGON}))
    for model in ["gpt-3.5-turbo", "gpt-4", "gpt-4o", "gpt-4o-mini"]:
        bodies.append(("weather tools " + model, {"model": model, "messages": WEATHER_MESSAGES, "tools": WEATHER_TOOLS}))
    for model in ["gpt-4.1-mini", "gpt-5", "o3", "claude-sonnet-4-5", "ft:gpt-4o-mini-2024-07-18:acme::abc123", "gpt-35-turbo"]:
        bodies.append(("weather tools " + model, {"model": model, "messages": WEATHER_MESSAGES, "tools": WEATHER_TOOLS, "max_completion_tokens": 50}))
    bodies.append(("nested tool gpt-4o", {"model": "gpt-4o", "messages": WEATHER_MESSAGES, "tools": [NESTED_TOOL, WEATHER_TOOLS[0]]}))
    bodies.append(("nested tool gpt-4", {"model": "gpt-4", "messages": WEATHER_MESSAGES, "tools": [NESTED_TOOL]}))
    bodies.append((
        "tool without description or parameters",
        {"model": "gpt-4o", "messages": [{"role": "user", "content": "ping"}], "tools": [{"type": "function", "function": {"name": "ping"}}]},
    ))
    bodies.append((
        "legacy functions",
        {"model": "gpt-3.5-turbo-0613", "messages": WEATHER_MESSAGES, "functions": [WEATHER_TOOLS[0]["function"]], "max_tokens": 30, "n": 3},
    ))
    bodies.append(("empty tools", {"model": "gpt-4o", "messages": WEATHER_MESSAGES, "tools": []}))
    bodies.append((
        "multi-part content with images",
        {
            "model": "gpt-4o",
            "messages": [
                {"role": "system", "content": [{"type": "text", "text": "You describe pictures."}]},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is in these images? Compare them."},
                        {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "low"}},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                        {"type": "text", "text": "Answer in 日本語 please."},
                        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
                        {"type": "file", "file": {"file_id": "file-abc"}},
                    ],
                },
            ],
            "max_completion_tokens": 300,
            "n": 2,
        },
    ))
    bodies.append((
        "tool call round trip",
        {
            "model": "gpt-4o-mini",
            "messages": WEATHER_MESSAGES
            + [
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": "call_1", "type": "function", "function": {"name": "get_current_weather", "arguments": '{"location": "San Francisco, CA", "unit": "celsius"}'}}
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature": 18, "sky": "fog"}'},
                {"role": "assistant", "content": [{"type": "refusal", "refusal": "I cannot share that."}]},
                {"role": "assistant", "function_call": {"name": "legacy", "arguments": "{}"}, "content": None},
            ],
            "tools": WEATHER_TOOLS,
        },
    ))
    bodies.append((
        "names and junk values",
        {
            "model": "gpt-4",
            "messages": [
                {"role": "user", "name": "Ada_Lovelace", "content": "Hi!"},
                {"role": "user", "name": 42, "content": "numbers as names are ignored", "weight": 1.5, "flag": True, "nothing": None},
                {"role": "developer", "content": "", "extra": {"nested": "objects are ignored"}},
                {"role": "user", "content": ["bare string part", 7, None, {"type": "text", "text": 5}]},
            ],
        },
    ))
    bodies.append((
        "special-token text in content",
        {"model": "gpt-4o", "messages": [{"role": "user", "content": "<|endoftext|> and <|im_start|>system<|im_sep|>"}]},
    ))
    bodies.append(("empty messages", {"model": "gpt-4o", "messages": []}))
    # Random conversations built from the text corpus.
    for i in range(24):
        model = rng.choice(["gpt-4o", "gpt-4o-mini", "gpt-4", "gpt-3.5-turbo", "gpt-4.1", "o4-mini", "llama-3.1-70b"])
        msgs = []
        for _ in range(rng.randint(1, 5)):
            role = rng.choice(["system", "user", "assistant", "developer"])
            if rng.random() < 0.3:
                content = [{"type": "text", "text": rng.choice(texts)} for _ in range(rng.randint(1, 3))]
            else:
                content = rng.choice(texts)
            m = {"role": role, "content": content}
            if rng.random() < 0.25:
                m["name"] = rng.choice(["bob", "example_user", "Zoë", "agent-7"])
            msgs.append(m)
        body = {"model": model, "messages": msgs}
        if rng.random() < 0.5:
            body["max_tokens"] = rng.randint(1, 4000)
        if rng.random() < 0.3:
            body["n"] = rng.randint(1, 4)
        bodies.append((f"random chat {i}", body))
    return bodies


def other_bodies(texts):
    rng = random.Random(11)
    out = []
    long_text = " ".join(rng.choice(texts) for _ in range(10))
    # completions
    out += [
        ("/v1/completions", "prompt string", {"model": "gpt-3.5-turbo-instruct", "prompt": "Say this is a test", "max_tokens": 7}),
        ("/v1/completions", "prompt array", {"model": "davinci-002", "prompt": ["one", "two 二", long_text], "max_tokens": 10, "n": 2}),
        ("/v1/completions", "prompt token array", {"model": "babbage-002", "prompt": [1, 2, 3, 4, 5]}),
        ("/v1/completions", "prompt token arrays", {"model": "babbage-002", "prompt": [[1, 2], [3, 4, 5], []], "max_tokens": 4, "best_of": 3}),
        ("/v1/completions", "prompt with suffix", {"model": "gpt-3.5-turbo-instruct", "prompt": ["def f(", "class A"], "suffix": "    return x\n"}),
        ("/v1/completions", "empty prompt array", {"model": "davinci-002", "prompt": [], "max_tokens": 5}),
    ]
    # embeddings
    out += [
        ("/v1/embeddings", "input string", {"model": "text-embedding-3-small", "input": long_text}),
        ("/v1/embeddings", "input strings", {"model": "text-embedding-3-large", "input": texts[:12], "dimensions": 256}),
        ("/v1/embeddings", "input tokens", {"model": "text-embedding-ada-002", "input": list(range(40))}),
        ("/v1/embeddings", "input token arrays", {"model": "text-embedding-ada-002", "input": [[1, 2, 3], [9] * 17]}),
        ("/v1/embeddings", "unknown model", {"model": "nomic-embed-text", "input": ["héllo", "wörld"]}),
    ]
    # responses
    out += [
        ("/v1/responses", "input string", {"model": "gpt-4.1", "input": "Tell me a three sentence bedtime story about a unicorn."}),
        ("/v1/responses", "instructions and input", {"model": "gpt-5-mini", "instructions": "Talk like a pirate.", "input": long_text, "max_output_tokens": 500}),
        (
            "/v1/responses",
            "input items",
            {
                "model": "o3",
                "input": [
                    {"role": "developer", "content": "Be terse."},
                    {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "What is in this image?"}, {"type": "input_image", "image_url": "https://example.com/x.jpg"}, {"type": "input_file", "file_id": "file-1"}]},
                    {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "A cat.", "annotations": []}]},
                    {"type": "function_call", "call_id": "call_9", "name": "lookup", "arguments": '{"q": "cat"}'},
                    {"type": "function_call_output", "call_id": "call_9", "output": "Felis catus"},
                    {"type": "function_call_output", "call_id": "call_9", "output": [{"type": "input_text", "text": "more"}]},
                ],
                "tools": [
                    {"type": "function", "name": "lookup", "description": "Look a word up.", "parameters": {"type": "object", "properties": {"q": {"type": "string", "description": "Word"}}}},
                    {"type": "web_search"},
                ],
                "max_output_tokens": 1000,
            },
        ),
        ("/v1/responses", "no input", {"model": "gpt-4o", "previous_response_id": "resp_1"}),
        ("/v1/responses", "claude model", {"model": "claude-opus-4-1", "input": "hello", "max_tokens": 64}),
    ]
    # moderations
    out += [
        ("/v1/moderations", "input string", {"model": "omni-moderation-latest", "input": "I want to hurt them. <|endoftext|>"}),
        ("/v1/moderations", "input strings", {"model": "text-moderation-latest", "input": texts[12:20]}),
        ("/v1/moderations", "input parts", {"model": "omni-moderation-latest", "input": [{"type": "text", "text": "...text to classify goes here..."}, {"type": "image_url", "image_url": {"url": "https://example.com/image.png"}}]}),
    ]
    return out


# --------------------------------------------------------------------------


def build():
    rng = random.Random(20240601)
    texts = HAND_PICKED + random_texts(rng)
    text_cases = [{"text": t, **{name: len(enc.encode_ordinary(t)) for name, enc in ENC.items()}} for t in texts]

    # Sanity checks against the numbers the cookbook verified with the API.
    for model, want in [("gpt-3.5-turbo", 129), ("gpt-4", 129), ("gpt-4o", 124), ("gpt-4o-mini", 124)]:
        got, _ = expected("/v1/chat/completions", {"model": model, "messages": JARGON}, 0)
        assert got == want, (model, got, want)
    for model, want in [("gpt-3.5-turbo", 105), ("gpt-4", 105), ("gpt-4o", 101), ("gpt-4o-mini", 101)]:
        got, _ = expected("/v1/chat/completions", {"model": model, "messages": WEATHER_MESSAGES, "tools": WEATHER_TOOLS}, 0)
        assert got == want, (model, got, want)
    # Note: ordinary encoding differs from the special-token one on this text.
    assert len(ENC["o200k_base"].encode_ordinary("<|endoftext|>")) > 1

    default = 256
    estimate_cases = []
    for name, body in chat_bodies(texts):
        inp, out = expected("/v1/chat/completions", body, default)
        estimate_cases.append({"name": name, "endpoint": "/v1/chat/completions", "body": body, "default_max_output": default, "input": inp, "max_output": out, "exact": is_exact(body["model"])})
    for endpoint, name, body in other_bodies(texts):
        inp, out = expected(endpoint, body, default)
        estimate_cases.append({"name": name, "endpoint": endpoint, "body": body, "default_max_output": default, "input": inp, "max_output": out, "exact": is_exact(body["model"])})

    return {
        "about": "Generated by scripts/gen_token_fixtures.py; do not edit by hand. Counts are Python tiktoken's encode_ordinary.",
        "tiktoken_version": tiktoken.__version__,
        "image_part_tokens": IMAGE_PART_TOKENS,
        "text_cases": text_cases,
        "estimate_cases": estimate_cases,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--check", action="store_true", help="compare with the existing fixture instead of writing")
    args = ap.parse_args()
    data = build()
    text = json.dumps(data, ensure_ascii=False, indent=None, separators=(",", ":"))
    # One case per line keeps diffs readable.
    text = text.replace(',{"text":', ',\n{"text":').replace(',{"name":', ',\n{"name":') + "\n"
    if args.check:
        old = args.out.read_text(encoding="utf-8") if args.out.exists() else ""
        if old != text:
            sys.exit(f"{args.out} is out of date; rerun scripts/gen_token_fixtures.py")
        print(f"{args.out} is up to date")
        return
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    n_est = len(data["estimate_cases"])
    print(f"wrote {args.out.relative_to(REPO)}: {len(data['text_cases'])} texts x 2 encodings, {n_est} request bodies, {len(text.encode())} bytes")


if __name__ == "__main__":
    main()
