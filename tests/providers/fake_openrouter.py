"""A fake OpenRouter API (``/api/v1``) on a real local socket.

Shapes from OpenRouter's docs ("Image Generation" guide,
openrouter.ai/docs/guides/overview/multimodal/image-generation: ``modalities``,
``image_config.aspect_ratio``/``image_size``, images in ``choices[0].message.images[]`` as
``{"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}``; "Usage
Accounting": ``usage.cost`` in USD; ``GET /api/v1/key``; ``GET /api/v1/models`` with
``output_modalities``), from LiteLLM's OpenRouter image client (``litellm/llms/openrouter``),
and from providers.md §3.7/§3.9 for the dedicated ``POST /api/v1/images`` (``data[].b64_json``,
``media_type``, ``usage.cost``) and its catalogue ``GET /api/v1/images/models``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tests.providers.fake_service import FakeService, Reply, Seen

__all__ = ["FakeOpenRouter"]

CHAT_MODELS = ["google/gemini-2.5-flash-image", "black-forest-labs/flux.2-pro"]
IMAGE_MODELS = ["openai/gpt-image-1", "bytedance-seed/seedream-4.5"]


@dataclass
class FakeOpenRouter(FakeService):
    key: str = "sk-or-v1-test"
    cost: float = 0.0387
    content_only: str = ""  # answer the image in content (markdown/data URL), not images[]
    text_only: bool = False  # the model answers only text

    def answer(self, seen: Seen) -> Reply:
        if seen.headers.get("authorization") != f"Bearer {self.key}":
            return Reply.of({"error": {"code": 401, "message": "No auth credentials found"}}, 401)
        route = (seen.method, seen.path)
        if route == ("GET", "/api/v1/key"):
            return Reply.of({"data": {"label": "sk-or-v1-tes...", "limit_remaining": 4.5}})
        if route == ("GET", "/api/v1/models"):
            return Reply.of({"data": [{"id": m, "name": m} for m in CHAT_MODELS]})
        if route == ("GET", "/api/v1/images/models"):
            return Reply.of({"data": [{"id": m} for m in IMAGE_MODELS]})
        if route == ("POST", "/api/v1/chat/completions"):
            return self._chat(seen.json)
        if route == ("POST", "/api/v1/images"):
            body = seen.json
            n = int(body.get("n") or 1)
            data = [{"b64_json": self.b64picture(), "media_type": "image/png"} for _ in range(n)]
            return Reply.of({"created": 1, "data": data, "usage": {"cost": self.cost * n}})
        return super().answer(seen)

    def _chat(self, body: dict[str, Any]) -> Reply:
        if body["model"] in IMAGE_MODELS:  # what the real service does for image-only models
            return Reply.of({"error": {"code": 500, "message": "Internal Server Error"}}, 500)
        message: dict[str, Any] = {"role": "assistant", "content": ""}
        if self.text_only:
            message["content"] = "I can only describe it: a cat on a mat."
        elif self.content_only == "markdown":
            message["content"] = f"Here it is: ![image](data:image/png;base64,{self.b64picture()})"
        else:
            message["images"] = [
                {
                    "type": "image_url",
                    "image_url": {"url": f"data:image/png;base64,{self.b64picture()}"},
                }
            ]
        return Reply.of(
            {
                "id": "gen-1",
                "model": body["model"],
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 9, "completion_tokens": 1290, "cost": self.cost},
            }
        )
