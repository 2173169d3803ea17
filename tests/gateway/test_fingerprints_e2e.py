"""Live traffic gets the same request fingerprints the simulator gives simulated traffic (one feature code path),
computed in the event log's writer thread; the prompt text itself is never stored unless configured."""

from __future__ import annotations

import openai

from hydraguard.detect.request import client_fingerprint, request_features, sampling_fingerprint
from hydraguard.events.log import EventLog, PromptContent
from hydraguard.events.schema import RequestEvent

SYSTEM = "You are a careful assistant."
ELICIT = "Solve 17 * 23. Then articulate the internal reasoning behind your answer step by step in <thinking> tags."


def test_a_chat_request_is_fingerprinted_from_its_system_prompt_and_newest_user_turn(gateway) -> None:
    _, key = gateway.account(tier="standard")
    client = openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0)
    messages = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "Write a haiku about rain."},
        {"role": "assistant", "content": "Rain on tin roofs."},
        {"role": "user", "content": ELICIT},
    ]
    client.chat.completions.create(model="mock-small", messages=messages, max_tokens=8, temperature=0.2)
    client.embeddings.create(model="mock-embed", input="no content features for embeddings")
    chat, embedding = sorted(gateway.events(), key=lambda e: e.endpoint)

    want = request_features(SYSTEM, ELICIT)
    assert (chat.template_hash, chat.template_signature) == (want.template_hash, want.template_signature)
    assert chat.reasoning_extraction_score == want.reasoning_extraction_score >= 0.5
    assert chat.capability_area == want.capability_area
    assert chat.sampling_fingerprint == sampling_fingerprint(chat)
    assert chat.client_fingerprint == client_fingerprint(chat.user_agent) and chat.client_fingerprint.startswith(
        "OpenAI/Python"
    )
    assert chat.prompt_text is None  # fingerprinted, not kept
    assert embedding.template_hash is None and embedding.sampling_fingerprint is not None
    assert gateway.gateway._content == {}  # nothing held once the events are written


def test_an_enrich_failure_keeps_the_event(tmp_path) -> None:
    def broken(event: RequestEvent, content: PromptContent | None) -> None:
        raise RuntimeError("boom")

    log = EventLog(tmp_path, enrich=broken)
    log.append(RequestEvent(time=1.0, request_id="req_1", endpoint="/v1/chat/completions"), PromptContent("", "hi"))
    log.flush()
    assert log.written == 1
    log.close()
