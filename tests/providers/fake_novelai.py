"""A fake NovelAI image API on a real local socket.

Shapes from NovelAI's public API docs (image.novelai.net/docs, ``POST /ai/generate-image``:
``input``, ``model``, ``action``, ``parameters`` with ``params_version``, ``v4_prompt``
``{caption: {base_caption, char_captions[{char_caption, centers}]}, use_coords, use_order}``,
``v4_negative_prompt``, ``characterPrompts``; the answer ``application/x-zip-compressed`` with
``image_0.png``...), from SillyTavern's ``src/endpoints/novelai.js`` (which unzips the answer
and sends the same V4 structure), and from the account API (api.novelai.net/docs,
``GET /user/subscription``: ``tier``, ``active``, ``trainingStepsLeft``). Errors are
``{"statusCode": 429, "message": "Concurrent generation is locked"}`` and the like.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass

from tests.providers.fake_service import FakeService, Reply, Seen

__all__ = ["FakeNovelAI", "zip_of"]


def zip_of(files: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buf.getvalue()


@dataclass
class FakeNovelAI(FakeService):
    key: str = "pst-test-token"
    tier: int = 3

    def answer(self, seen: Seen) -> Reply:
        if seen.headers.get("authorization") != f"Bearer {self.key}":
            return Reply.of({"statusCode": 401, "message": "Invalid accessToken."}, 401)
        if (seen.method, seen.path) == ("GET", "/user/subscription"):
            return Reply.of(
                {
                    "tier": self.tier,
                    "active": self.tier > 0,
                    "trainingStepsLeft": {
                        "fixedTrainingStepsLeft": 10000,
                        "purchasedTrainingSteps": 0,
                    },
                }
            )
        if (seen.method, seen.path) == ("POST", "/ai/generate-image"):
            params = seen.json["parameters"]
            files = {
                f"image_{i}.png": self.picture(params["width"] // 64, params["height"] // 64)
                for i in range(params["n_samples"])
            }
            return Reply(200, zip_of(files), {"Content-Type": "application/x-zip-compressed"})
        return super().answer(seen)
