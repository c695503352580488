"""The OpenAI API as the ``inferstack/echo`` preset speaks it: request parsing and response bodies (pure, stdlib only).

What an official OpenAI client relies on, and what this module guarantees:

- ``GET /v1/models`` lists one model whose ``id`` is stable for the deployment: ``INFERSTACK_MODEL`` (the deployment's
  ``model``), else the parts the Kubernetes target injects (``INFERSTACK_MODEL_PATH`` / ``_REGISTRY`` + ``_VERSION``),
  else the deployment key. It never changes with the revision, so a redeploy does not rename the model.
- ``/v1/completions`` and ``/v1/chat/completions`` answer ``id``, ``object``, ``created`` (Unix seconds), ``model``,
  ``choices`` and ``usage`` (``prompt_tokens``, ``completion_tokens``, ``total_tokens``); streamed, each event is one
  token (``data: {json}``), an optional usage-only event (``stream_options.include_usage``), then ``data: [DONE]``.
- Every error body is ``{"error": {"message", "type", "param", "code"}}`` (``inferstack.openai_errors``), so
  clients show the message.
- The request's ``model`` is accepted whatever it names: a service's deployments may serve different model ids, and
  the gateway — not the client — picks the deployment.

Kept free of imports beyond the standard library: the echo preset's start-up budget includes importing this module.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, NamedTuple

from inferstack.openai_errors import error_body

DEFAULT_MAX_TOKENS = 16
MAX_TOKENS_LIMIT = 4096
MAX_CHOICES = 8
OWNER = "inferstack"

class RequestError(Exception):
    """A request an OpenAI endpoint cannot serve: status 400 with the parameter at fault."""

    def __init__(self, message: str, param: str | None = None, code: str = "invalid_value") -> None:
        super().__init__(message)
        self.message, self.param, self.code = message, param, code

    def body(self) -> dict[str, Any]:
        return error_body(400, self.message, self.code, self.param)


def model_id(env: Mapping[str, str]) -> str:
    """The model id of this instance's deployment; stable across revisions (see the module docstring)."""
    if env.get("INFERSTACK_MODEL"):
        return env["INFERSTACK_MODEL"]
    if env.get("INFERSTACK_MODEL_PATH"):
        return env["INFERSTACK_MODEL_PATH"]
    if env.get("INFERSTACK_MODEL_REGISTRY"):
        version = env.get("INFERSTACK_MODEL_VERSION")
        return env["INFERSTACK_MODEL_REGISTRY"] + (f":{version}" if version else "")
    return env.get("INFERSTACK_DEPLOYMENT") or "echo"


def model_object(model: str, created: int) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": created, "owned_by": OWNER}


def model_list(model: str, created: int) -> dict[str, Any]:
    return {"object": "list", "data": [model_object(model, created)]}


# --- requests --------------------------------------------------------------------------------------------------

class Generation(NamedTuple):
    """What to generate: the prompt (text the toy model reads), token budget, choices, streaming options."""

    prompt: str
    prompt_tokens: int
    max_tokens: int
    n: int
    stream: bool
    include_usage: bool


def _whole_number(request: Mapping[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = request.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise RequestError(f"'{name}' must be a whole number from {low} to {high} (got {json.dumps(value)})", name)
    return value


def _options(request: Mapping[str, Any], tokens_field: str) -> tuple[int, int, bool, bool]:
    max_tokens = _whole_number(request, tokens_field, DEFAULT_MAX_TOKENS, 0, MAX_TOKENS_LIMIT)
    n = _whole_number(request, "n", 1, 1, MAX_CHOICES)
    stream = request.get("stream", False)
    if not isinstance(stream, bool):
        raise RequestError("'stream' must be true or false", "stream")
    options = request.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise RequestError("'stream_options' must be an object", "stream_options")
    include_usage = bool(options and options.get("include_usage"))
    return max_tokens, n, stream, include_usage


def completion_request(request: Mapping[str, Any]) -> Generation:
    """A ``/v1/completions`` body: ``prompt`` is a string or a list of strings."""
    prompt = request.get("prompt", "")
    if isinstance(prompt, list) and all(isinstance(p, str) for p in prompt):
        prompt = " ".join(prompt)
    elif not isinstance(prompt, str):
        raise RequestError("'prompt' must be a string or a list of strings", "prompt")
    max_tokens, n, stream, include_usage = _options(request, "max_tokens")
    return Generation(prompt, len(prompt.split()), max_tokens, n, stream, include_usage)


def _content_text(content: Any, index: int) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict):
                raise RequestError(f"messages[{index}].content parts must be objects", f"messages[{index}].content")
            if part.get("type") == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
        return " ".join(texts)
    raise RequestError(f"messages[{index}].content must be a string or a list of content parts",
                       f"messages[{index}].content")


def chat_request(request: Mapping[str, Any]) -> Generation:
    """A ``/v1/chat/completions`` body: the toy model answers the last message; every message counts as prompt."""
    messages = request.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("'messages' must be a non-empty list of {role, content} objects", "messages",
                           "missing_required_parameter" if messages is None else "invalid_value")
    texts = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise RequestError(f"messages[{i}] must be an object with a 'role'", f"messages[{i}]")
        texts.append(_content_text(message.get("content"), i))
    tokens_field = "max_completion_tokens" if request.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens, n, stream, include_usage = _options(request, tokens_field)
    return Generation(texts[-1], sum(len(t.split()) for t in texts), max_tokens, n, stream, include_usage)


# --- responses -------------------------------------------------------------------------------------------------

def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def finish_reason(produced: int, asked: int) -> str:
    """`length` when the budget cut the answer (the toy model always fills it), else `stop`."""
    return "length" if asked and produced >= asked else "stop"


def completion(cid: str, created: int, model: str, gen: Generation, text: str, produced: int) -> dict[str, Any]:
    reason = finish_reason(produced, gen.max_tokens)
    return {"id": cid, "object": "text_completion", "created": created, "model": model,
            "choices": [{"index": i, "text": text, "logprobs": None, "finish_reason": reason} for i in range(gen.n)],
            "usage": usage(gen.prompt_tokens, produced * gen.n)}


def chat_completion(cid: str, created: int, model: str, gen: Generation, text: str, produced: int) -> dict[str, Any]:
    reason = finish_reason(produced, gen.max_tokens)
    return {"id": cid, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": i, "message": {"role": "assistant", "content": text, "refusal": None},
                         "logprobs": None, "finish_reason": reason} for i in range(gen.n)],
            "usage": usage(gen.prompt_tokens, produced * gen.n)}


def completion_chunk(cid: str, created: int, model: str, index: int, token: str,
                     reason: str | None) -> dict[str, Any]:
    return {"id": cid, "object": "text_completion", "created": created, "model": model,
            "choices": [{"index": index, "text": token, "logprobs": None, "finish_reason": reason}]}


def chat_chunk(cid: str, created: int, model: str, index: int, delta: dict[str, Any],
               reason: str | None) -> dict[str, Any]:
    return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": reason}]}


def usage_chunk(cid: str, created: int, model: str, chat: bool, gen: Generation, produced: int) -> dict[str, Any]:
    """The last event of a stream with ``stream_options.include_usage``: usage, no choices."""
    return {"id": cid, "object": "chat.completion.chunk" if chat else "text_completion", "created": created,
            "model": model, "choices": [], "usage": usage(gen.prompt_tokens, produced * gen.n)}
