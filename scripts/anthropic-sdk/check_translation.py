"""Check the translation goldens against the official SDKs' types.

    python check_translation.py FIXTURES_DIR

For each fixture of `crates/batchling-providers/tests/fixtures/anthropic/` that expects a
translation (the Rust test checks that the translation gives exactly that):
- request: `expected` is a valid `anthropic` `MessageCreateParamsNonStreaming`;
- answer: `input` is a valid `anthropic` `Message`, `expected` a valid `openai`
  `ChatCompletion`;
- error: `input` is a valid `anthropic` `ErrorResponse`, `expected["error"]` a valid
  `openai` `ErrorObject`.

The request params are TypedDicts, which pydantic checks loosely (extra keys pass, `Iterable`
members lazily, and a union member that is a response model accepts anything), so they are
checked here by walking the type hints: every required key present, no key the type does not
name, each value of its type. `temperature`, `top_p` and `top_k` are the exception: the SDK
dropped them from its params (1.0), the API still takes them on the models that have them, so
they are checked as numbers beside the type. Prints one line per problem and `OK` at the end
when there is none; exits 1 otherwise.
"""

import collections.abc
import json
import sys
import typing
from pathlib import Path

import typing_extensions
from anthropic.types import ErrorResponse, Message
from anthropic.types.message_create_params import MessageCreateParamsNonStreaming
from openai.types.chat import ChatCompletion
from openai.types.shared import ErrorObject

# Sampling fields the API takes on older models but the SDK's params no longer name.
SAMPLING = {"temperature": float, "top_p": float, "top_k": int}

SEQUENCES = (list, collections.abc.Iterable, collections.abc.Sequence, typing.List)
MAPPINGS = (dict, collections.abc.Mapping, typing.Dict)


def problems(value, tp, path):
    """Why `value` is not of the TypedDict-based type `tp` (empty when it is)."""
    origin = typing_extensions.get_origin(tp)
    args = typing_extensions.get_args(tp)
    if origin is typing_extensions.Annotated:
        return problems(value, args[0], path)
    if origin in (typing_extensions.Required, typing_extensions.NotRequired):
        return problems(value, args[0], path)
    if tp is typing.Any or tp is object:
        return []
    if origin is typing.Union:
        found = []
        for arg in args:
            why = problems(value, arg, path)
            if not why:
                return []
            found.append(why)
        # The member that got furthest in is most likely the one meant.
        closest = max(found, key=lambda why: max(len(p.split(":")[0]) for p in why))
        return [f"{path}: matches no member of the union; closest: {'; '.join(closest)}"]
    if origin is typing_extensions.Literal:
        return [] if value in args else [f"{path}: {value!r} is not one of {args}"]
    if tp is type(None):
        return [] if value is None else [f"{path}: expected null"]
    if typing_extensions.is_typeddict(tp):
        return typed_dict_problems(value, tp, path)
    if origin in SEQUENCES:
        if not isinstance(value, list):
            return [f"{path}: expected a list"]
        return [p for i, v in enumerate(value) for p in problems(v, args[0] if args else object, f"{path}[{i}]")]
    if origin in MAPPINGS or tp in MAPPINGS:
        return [] if isinstance(value, dict) else [f"{path}: expected an object"]
    if tp is str:
        return [] if isinstance(value, str) else [f"{path}: expected a string"]
    if tp is bool:
        return [] if isinstance(value, bool) else [f"{path}: expected a boolean"]
    if tp is int:
        return [] if isinstance(value, int) and not isinstance(value, bool) else [f"{path}: expected an integer"]
    if tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return [] if ok else [f"{path}: expected a number"]
    # Response models (pydantic) and anything else: not what a request body holds.
    return [f"{path}: type {tp!r} is not a request type"]


def typed_dict_problems(value, tp, path):
    if not isinstance(value, dict):
        return [f"{path}: expected an object ({tp.__name__})"]
    hints = typing_extensions.get_type_hints(tp, include_extras=True)
    found = [f"{path}.{k}: not a member of {tp.__name__}" for k in value if k not in hints]
    found += [f"{path}.{k}: required by {tp.__name__}" for k in required_keys(tp, hints) if k not in value]
    for k, v in value.items():
        if k in hints:
            found += problems(v, hints[k], f"{path}.{k}")
    return found


def required_keys(tp, hints):
    """The SDK's modules use `from __future__ import annotations`, which hides `Required` from
    `__required_keys__`: read it from the hints."""
    def required(hint):
        origin = typing_extensions.get_origin(hint)
        if origin is typing_extensions.Annotated:
            return required(typing_extensions.get_args(hint)[0])
        if origin is typing_extensions.Required:
            return True
        if origin is typing_extensions.NotRequired:
            return False
        return tp.__total__

    return [k for k, hint in hints.items() if required(hint)]


def check(fixture):
    kind = fixture["translate"]
    if kind == "request":
        body = dict(fixture["expected"])
        sampling = {k: body.pop(k) for k in SAMPLING if k in body}
        found = problems(body, MessageCreateParamsNonStreaming, "expected")
        return found + [p for k, v in sampling.items() for p in problems(v, SAMPLING[k], f"expected.{k}")]
    try:
        if kind == "answer":
            Message.model_validate(fixture["input"], strict=False)
            ChatCompletion.model_validate(fixture["expected"])
        elif kind == "error":
            ErrorResponse.model_validate(fixture["input"])
            ErrorObject.model_validate(fixture["expected"]["error"])
    except Exception as e:  # a pydantic ValidationError, or a KeyError on a bad fixture
        return [str(e)]
    return []


def main():
    found = 0
    for path in sorted(Path(sys.argv[1]).glob("*.json")):
        fixture = json.loads(path.read_text())
        if "expected" not in fixture:
            continue
        for problem in check(fixture):
            print(f"{path.name}: {problem}")
            found += 1
    if found:
        sys.exit(1)
    print("OK")


if __name__ == "__main__":
    main()
