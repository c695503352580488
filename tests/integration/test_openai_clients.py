"""The official `openai` Python client against the real gateway in front of echo instances (real processes).

What users do first with an OpenAI-compatible server behind the gateway: list models, complete, chat — whole and
streamed — and read the error when something is refused. The gateway relays the instances' answers untouched and
answers its own errors in the same OpenAI shape, so the client shows the gateway's words."""

from __future__ import annotations

import openai
import pytest
from embedded_harness import echo_deployment, echo_service, gateway, start_platform, wait_ready


@pytest.fixture(scope="module")
def chat(tmp_path_factory):
    """Service `chat`: deployment `stable` serving model `qwen2-7b:3` (its `model`) takes all the traffic."""
    p = start_platform(tmp_path_factory.mktemp("openai"))
    try:
        client = p.client()
        stable = echo_deployment("stable", model={"registry": "qwen2-7b", "version": "3"})
        client.apply({"services": [echo_service("chat", [stable])]})
        wait_ready(client, "chat")
        url, headers = gateway(client, "chat")
        yield url, headers["Authorization"].removeprefix("Bearer ")
    finally:
        p.stop()


@pytest.fixture
def oai(chat) -> openai.OpenAI:
    url, key = chat
    with openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=10) as client:
        yield client


def test_models_list_names_the_deployments_model(oai):
    models = oai.models.list()
    assert [m.id for m in models.data] == ["qwen2-7b:3"]
    assert models.data[0].owned_by == "inferstack" and models.data[0].created > 0
    assert oai.models.retrieve("qwen2-7b:3").id == "qwen2-7b:3"


def test_completion_whole_and_streamed(oai):
    whole = oai.completions.create(model="qwen2-7b:3", prompt="one two three", max_tokens=4)
    assert whole.choices[0].text == "THREE TWO ONE THREE"
    assert whole.model == "qwen2-7b:3" and whole.created > 0 and whole.object == "text_completion"
    assert (whole.usage.prompt_tokens, whole.usage.completion_tokens, whole.usage.total_tokens) == (3, 4, 7)

    stream = oai.completions.create(model="qwen2-7b:3", prompt="one two three", max_tokens=4, stream=True)
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks) == "THREE TWO ONE THREE"
    assert len(chunks) == 4 and {c.id for c in chunks} == {chunks[0].id}
    assert chunks[-1].choices[0].finish_reason == "length"


def test_chat_completion_whole_and_streamed_with_usage(oai):
    messages = [{"role": "system", "content": "you are a mirror"}, {"role": "user", "content": "hello world"}]
    whole = oai.chat.completions.create(model="qwen2-7b:3", messages=messages, max_tokens=3)
    assert whole.choices[0].message.role == "assistant"
    assert whole.choices[0].message.content == "WORLD HELLO WORLD"
    assert whole.choices[0].finish_reason == "length"
    assert whole.object == "chat.completion" and whole.model == "qwen2-7b:3" and whole.created > 0
    assert (whole.usage.prompt_tokens, whole.usage.completion_tokens, whole.usage.total_tokens) == (6, 3, 9)

    stream = oai.chat.completions.create(model="qwen2-7b:3", messages=messages, max_tokens=3, stream=True,
                                         stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "WORLD HELLO WORLD"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 9


def test_a_refused_key_shows_the_gateways_message(chat):
    url, _ = chat
    with (openai.OpenAI(base_url=f"{url}/v1", api_key="isk_wrong", max_retries=0, timeout=10) as wrong,
          pytest.raises(openai.AuthenticationError) as refused):
        wrong.chat.completions.create(model="qwen2-7b:3", messages=[{"role": "user", "content": "hi"}])
    assert refused.value.status_code == 401
    assert "missing or invalid invocation key" in str(refused.value)
    assert refused.value.code == "invalid_api_key" and refused.value.type == "authentication_error"


def test_an_unknown_deployment_and_an_instance_error_show_their_messages(oai):
    with pytest.raises(openai.NotFoundError) as unknown:
        oai.chat.completions.create(model="qwen2-7b:3", messages=[{"role": "user", "content": "hi"}],
                                    extra_headers={"X-Inferstack-Deployment": "nope"})
    assert "service 'chat' has no deployment 'nope'" in str(unknown.value)
    with pytest.raises(openai.BadRequestError) as bad:  # relayed untouched from the instance
        oai.chat.completions.create(model="qwen2-7b:3", messages=[])
    assert "'messages' must be a non-empty list" in str(bad.value) and bad.value.param == "messages"
