"""The official `openai` Python client against a running `minference serve`.

Usage: python3 openai_client.py BASE_URL MODEL API_KEY   (BASE_URL ends in /v1)
"""
import sys

import openai

base_url, model, api_key = sys.argv[1], sys.argv[2], sys.argv[3]
client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=60)

models = [m.id for m in client.models.list()]
assert model in models, models

chat = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "hello there"}],
    max_tokens=12,
    temperature=0,
)
text = chat.choices[0].message.content
assert chat.choices[0].finish_reason in ("stop", "length"), chat
assert chat.usage.completion_tokens <= 12 and chat.usage.prompt_tokens > 0, chat.usage
extra = chat.model_extra["minference"]
assert extra["ttft_seconds"] >= 0 and extra["attention"] in ("dense", "minference"), extra

pieces = []
stream = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "hello there"}],
    max_tokens=12,
    temperature=0,
    stream=True,
)
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        pieces.append(chunk.choices[0].delta.content)
assert "".join(pieces) == text, (pieces, text)

completion = client.completions.create(model=model, prompt="hello", max_tokens=4, temperature=0)
assert completion.choices[0].text is not None

try:
    client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    raise AssertionError("unknown model accepted")
except openai.NotFoundError:
    pass

bad = openai.OpenAI(base_url=base_url, api_key="wrong", max_retries=0)
try:
    bad.models.list()
    raise AssertionError("wrong key accepted")
except openai.AuthenticationError:
    pass

print("ok")
