"""The echo preset's OpenAI API on the wire, as a real process: the shapes official clients parse."""

from __future__ import annotations

import json

import httpx

from inferstack.images.echo_openai import model_id

from .conftest import RawHttp

IDENTITY = {"INFERSTACK_SERVICE": "chat", "INFERSTACK_DEPLOYMENT": "canary", "INFERSTACK_ROLE": "main",
            "INFERSTACK_INSTANCE": "chat-canary-main-1", "INFERSTACK_VERSION": "3f2a9c"}


def _events(lines: list[str]) -> list[dict]:
    data = [line[6:] for line in lines if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    return [json.loads(d) for d in data[:-1]]


def test_model_id_is_the_deployments_model_else_its_key():
    assert model_id({"INFERSTACK_MODEL": "qwen2-7b:3", "INFERSTACK_DEPLOYMENT": "canary"}) == "qwen2-7b:3"
    assert model_id({"INFERSTACK_MODEL_REGISTRY": "qwen2-7b", "INFERSTACK_MODEL_VERSION": "3"}) == "qwen2-7b:3"
    assert model_id({"INFERSTACK_MODEL_PATH": "/models/llama"}) == "/models/llama"
    assert model_id({"INFERSTACK_DEPLOYMENT": "canary", "INFERSTACK_VERSION": "3f2a9c"}) == "canary"
    assert model_id({}) == "echo"


async def test_models_list_names_one_stable_model(start_echo):
    echo = await start_echo(INFERSTACK_MODEL="qwen2-7b:3", **IDENTITY)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{echo.port}") as client:
        listing = (await client.get("/v1/models")).json()
        one = await client.get("/v1/models/qwen2-7b:3")
        other = await client.get("/v1/models/gpt-4")
        posted = await client.post("/v1/models")
    assert listing["object"] == "list"
    assert [(m["id"], m["object"], m["owned_by"]) for m in listing["data"]] == [("qwen2-7b:3", "model", "inferstack")]
    assert isinstance(listing["data"][0]["created"], int)
    assert one.status_code == 200 and one.json()["id"] == "qwen2-7b:3"
    assert other.status_code == 404
    assert other.json()["error"] == {"message": "The model 'gpt-4' does not exist (this deployment serves "
                                                "'qwen2-7b:3')", "type": "invalid_request_error",
                                     "param": "model", "code": "model_not_found"}
    assert posted.status_code == 405 and posted.json()["error"]["code"] == "method_not_allowed"


async def test_chat_completion_has_message_usage_created_and_the_model_id(start_echo):
    echo = await start_echo(**IDENTITY)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{echo.port}") as client:
        response = await client.post("/v1/chat/completions", json={
            "model": "anything", "max_tokens": 3,
            "messages": [{"role": "system", "content": "be brief"},
                         {"role": "user", "content": [{"type": "text", "text": "hello big world"}]}]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert body["model"] == "canary" and isinstance(body["created"], int)
    assert body["choices"] == [{"index": 0, "message": {"role": "assistant", "content": "WORLD BIG HELLO",
                                                        "refusal": None},
                                "logprobs": None, "finish_reason": "length"}]
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}


async def test_streamed_chat_sends_a_role_delta_then_one_token_per_event_then_usage(start_echo):
    echo = await start_echo(ECHO_TOKEN_DELAY_MS="1", **IDENTITY)
    body = {"messages": [{"role": "user", "content": "a b"}], "max_tokens": 3, "stream": True,
            "stream_options": {"include_usage": True}}
    async with (httpx.AsyncClient(base_url=f"http://127.0.0.1:{echo.port}") as client,
                client.stream("POST", "/v1/chat/completions", json=body) as response):
        assert response.headers["content-type"] == "text/event-stream"
        events = _events([line async for line in response.aiter_lines()])
    assert {e["object"] for e in events} == {"chat.completion.chunk"}
    assert len({e["id"] for e in events}) == 1 and {e["model"] for e in events} == {"canary"}
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [e["choices"][0]["delta"]["content"] for e in events[1:-1]] == ["B", " A", " B"]
    assert [e["choices"][0]["finish_reason"] for e in events[1:-1]] == [None, None, "length"]
    assert events[-1]["choices"] == [] and events[-1]["usage"] == {"prompt_tokens": 2, "completion_tokens": 3,
                                                                    "total_tokens": 5}


async def test_bad_requests_get_openai_shaped_errors_naming_the_parameter(start_echo):
    echo = await start_echo(**IDENTITY)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{echo.port}") as client:
        no_messages = await client.post("/v1/chat/completions", json={"model": "x"})
        bad_tokens = await client.post("/v1/completions", json={"prompt": "a", "max_tokens": "many"})
        huge_tokens = await client.post("/v1/completions", json={"prompt": "a", "max_tokens": 10**30})
        bad_prompt = await client.post("/v1/completions", json={"prompt": {"a": 1}})
        not_json = await client.post("/v1/completions", content=b"{nope")
        unknown = await client.get("/v1/embeddings")
    assert no_messages.status_code == 400
    assert no_messages.json()["error"] == {
        "message": "'messages' must be a non-empty list of {role, content} objects", "type": "invalid_request_error",
        "param": "messages", "code": "missing_required_parameter"}
    assert bad_tokens.status_code == 400 and bad_tokens.json()["error"]["param"] == "max_tokens"
    assert huge_tokens.status_code == 400 and huge_tokens.json()["error"]["param"] == "max_tokens"
    assert bad_prompt.status_code == 400 and bad_prompt.json()["error"]["param"] == "prompt"
    assert not_json.status_code == 400 and not_json.json()["error"]["code"] == "invalid_json"
    assert unknown.status_code == 404
    assert unknown.json()["error"] == {"message": "Unknown request URL: GET /v1/embeddings",
                                       "type": "invalid_request_error", "param": None, "code": "unknown_url"}
    conn = await RawHttp.connect(echo.port)
    conn.writer.write(b"POST /v1/predict HTTP/1.1\r\nContent-Length: 5\r\n\r\n[1,2]")
    status, _, raw = await conn.read_response()
    conn.close()
    assert status == 400 and json.loads(raw)["error"]["type"] == "invalid_request_error"


async def test_injected_failures_are_server_errors(start_echo):
    echo = await start_echo(ECHO_FAILURE_RATE="1", **IDENTITY)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{echo.port}") as client:
        failed = await client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]})
    assert failed.status_code == 500
    assert failed.json()["error"] == {"message": "injected failure (ECHO_FAILURE_RATE)", "type": "server_error",
                                      "param": None, "code": "injected_failure"}
