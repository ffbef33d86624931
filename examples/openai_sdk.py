#!/usr/bin/env python3
"""Talk to weir with the official OpenAI Python SDK (`pip install openai`).

    WEIR_URL=http://127.0.0.1:8080 WEIR_KEY=wk_... python3 examples/openai_sdk.py "what time is it?"

weir's /v1/chat/completions is OpenAI-compatible: the SDK only needs
`base_url` pointed at weir's /v1 and a weir key as `api_key`. The `model` is
an agent id (the agent answers, with its tools and history) or
`upstream/<model>` (relayed to the provider weir is configured with).
`WEIR_MODEL` picks one; otherwise the first model `GET /v1/models` lists is
used, or an `echo` agent is created over weir's REST API.
"""

import json
import os
import sys
import urllib.request

from openai import OpenAI

BASE = os.environ.get("WEIR_URL", "http://127.0.0.1:8080").rstrip("/")
KEY = os.environ["WEIR_KEY"]


def create_echo_agent() -> str:
    req = urllib.request.Request(
        f"{BASE}/v1/agents",
        data=json.dumps({"name": "sdk-example", "model": "echo"}).encode(),
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req) as resp:
        return json.load(resp)["id"]


def main() -> None:
    prompt = sys.argv[1] if len(sys.argv) > 1 else "what time is it?"
    client = OpenAI(base_url=f"{BASE}/v1", api_key=KEY)

    model = os.environ.get("WEIR_MODEL")
    if not model:
        models = client.models.list().data
        model = models[0].id if models else create_echo_agent()
    print(f"[model] {model}")

    # Streaming, with the usage chunk at the end.
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": prompt}],
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            print(chunk.choices[0].delta.content, end="", flush=True)
        if chunk.usage:
            print(f"\n[usage] {chunk.usage.total_tokens} tokens")

    # The same without streaming: one chat.completion.
    done = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "and again, please"}]
    )
    print(f"[non-streaming] {done.choices[0].message.content}")
    print(f"[finish_reason] {done.choices[0].finish_reason}")


if __name__ == "__main__":
    main()
