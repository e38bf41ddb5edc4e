"""A fake Gemini API (``/v1beta``) on a real local socket.

Shapes from Google's Gemini API reference (ai.google.dev/api/generate-content:
``GenerateContentResponse.candidates[].content.parts[]`` with ``inlineData {mimeType, data}``,
``thought: true`` parts, ``finishReason`` values ``STOP``/``SAFETY``/``IMAGE_SAFETY``/
``PROHIBITED_CONTENT``/``NO_IMAGE``, ``promptFeedback.blockReason``, ``usageMetadata``; the
image-generation guide ai.google.dev/gemini-api/docs/image-generation: ``responseModalities``,
``imageConfig.aspectRatio``/``imageSize``; errors as ``{"error": {"code", "message",
"status"}}``, e.g. ``400 INVALID_ARGUMENT "API key not valid"``, ``429 RESOURCE_EXHAUSTED``),
and ``GET /v1beta/models/{model}`` (``supportedGenerationMethods``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tests.providers.fake_service import FakeService, Reply, Seen

__all__ = ["FakeGemini"]

MODELS = {"gemini-2.5-flash-image", "gemini-3-pro-image-preview"}


@dataclass
class FakeGemini(FakeService):
    key: str = "AIza-test-key"
    thought_first: bool = True  # a thinking model sends a draft image marked thought first
    block: str = ""  # "prompt": promptFeedback.blockReason; else a finishReason to answer

    def answer(self, seen: Seen) -> Reply:
        if seen.headers.get("x-goog-api-key") != self.key:
            return Reply.of(
                {
                    "error": {
                        "code": 400,
                        "message": "API key not valid. Please pass a valid API key.",
                        "status": "INVALID_ARGUMENT",
                    }
                },
                400,
            )
        if seen.method == "GET" and seen.path.startswith("/v1beta/models/"):
            name = seen.path.rsplit("/", 1)[1]
            if name not in MODELS:
                return Reply.of({"error": {"code": 404, "status": "NOT_FOUND"}}, 404)
            return Reply.of(
                {"name": f"models/{name}", "supportedGenerationMethods": ["generateContent"]}
            )
        if seen.method == "POST" and seen.path.endswith(":generateContent"):
            return self._generate(seen.json)
        return super().answer(seen)

    def _generate(self, body: dict[str, Any]) -> Reply:
        if self.block == "prompt":
            return Reply.of({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}})
        parts: list[dict[str, Any]] = []
        if self.thought_first:
            parts.append({"text": "Planning the scene", "thought": True})
            parts.append(
                {
                    "inlineData": {"mimeType": "image/png", "data": "bm90IGFuIGltYWdl"},
                    "thought": True,
                }
            )
        finish = self.block or "STOP"
        if not self.block:
            parts.append({"text": "Here is your image."})
            parts.append({"inlineData": {"mimeType": "image/png", "data": self.b64picture(16, 9)}})
        return Reply.of(
            {
                "candidates": [
                    {"content": {"role": "model", "parts": parts}, "finishReason": finish}
                ],
                "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 1290},
                "modelVersion": "gemini-2.5-flash-image",
            }
        )
