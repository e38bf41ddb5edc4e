"""Fake AI Horde and fal queue services on a real local socket.

AI Horde shapes from its API docs (aihorde.net/api, v2): ``POST /api/v2/generate/async`` with
an ``apikey`` header (anonymous ``0000000000``) and ``Client-Agent`` → ``202 {"id", "kudos"}``;
``GET /api/v2/generate/check/{id}`` → ``{finished, processing, restarted, waiting, done,
faulted, wait_time, queue_position, kudos, is_possible}``; ``GET /api/v2/generate/status/{id}``
→ the same plus ``generations[{img, seed, worker_name, model, censored}]`` (``img`` an R2 URL
when ``r2`` is true); ``DELETE /api/v2/generate/status/{id}`` cancels; ``GET
/api/v2/find_user``. The public client ``Haidra-Org/horde-sdk`` uses the same fields.

fal shapes from fal's queue docs (docs.fal.ai/model-endpoints/queue): ``POST
https://queue.fal.run/{app}`` with ``Authorization: Key …`` → ``{request_id, status_url,
response_url, cancel_url, queue_position}``; ``GET status_url`` → ``{"status": "IN_QUEUE",
"queue_position"}`` / ``IN_PROGRESS`` / ``COMPLETED``; ``GET response_url`` → ``{"images":
[{"url", "width", "height", "content_type"}], "seed", "has_nsfw_concepts"}``; ``PUT
cancel_url`` → ``202 {"status": "CANCELLATION_REQUESTED"}``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from tests.providers.fake_service import FakeService, Reply, Seen

__all__ = ["FakeFal", "FakeHorde"]


@dataclass
class _Job:
    checks_left: int  # status answers before it is done
    n: int
    cancelled: bool = False


@dataclass
class FakeHorde(FakeService):
    key: str = "0000000000"
    waits: int = 3  # checks before a job is done (-1: never)
    queue: int = 2  # the first position
    censored: bool = False
    impossible: bool = False
    expired_images: bool = False  # the R2 URLs answer 404 (expired)
    jobs: dict[str, _Job] = field(default_factory=dict)
    ids: Any = field(default_factory=lambda: itertools.count(1))

    def answer(self, seen: Seen) -> Reply:
        if seen.path.startswith("/r2/"):
            if self.expired_images:
                return Reply(404, b"<Error><Code>NoSuchKey</Code></Error>", {})
            return Reply(200, self.picture(12, 18), {"Content-Type": "image/png"})
        if seen.headers.get("apikey") != self.key:
            return Reply.of({"message": "No user matching sent API Key."}, 401)
        if (seen.method, seen.path) == ("GET", "/api/v2/find_user"):
            return Reply.of({"username": "Anonymous#0", "kudos": 0})
        if (seen.method, seen.path) == ("POST", "/api/v2/generate/async"):
            ident = f"req-{next(self.ids)}"
            self.jobs[ident] = _Job(self.waits, int(seen.json["params"].get("n", 1)))
            return Reply.of({"id": ident, "kudos": 12.0}, 202)
        kind, _, ident = seen.path.removeprefix("/api/v2/generate/").partition("/")
        job = self.jobs.get(ident)
        if job is None:
            return Reply.of({"message": "Request not found"}, 404)
        if seen.method == "DELETE" and kind == "status":
            job.cancelled = True
            return Reply.of({"done": False, "faulted": False, "generations": []})
        if kind == "check":
            done = job.checks_left == 0
            if job.checks_left > 0:
                job.checks_left -= 1
            position = max(0, self.queue - (self.waits - max(job.checks_left, 0)))
            return Reply.of(
                {
                    "finished": job.n if done else 0,
                    "processing": 1 if position == 0 and not done else 0,
                    "restarted": 0,
                    "waiting": 0 if done else 1,
                    "done": done,
                    "faulted": False,
                    "wait_time": 0 if done else 10 * (position + 1),
                    "queue_position": position,
                    "kudos": 12.0,
                    "is_possible": not self.impossible,
                }
            )
        if kind == "status":
            generations = [
                {
                    "img": f"{self.url}/r2/{ident}-{i}.webp",
                    "seed": "1234",
                    "id": f"{ident}-{i}",
                    "censored": self.censored,
                    "worker_name": "kind volunteer",
                    "model": "AlbedoBase XL (SDXL)",
                    "state": "ok",
                }
                for i in range(job.n)
            ]
            return Reply.of(
                {"done": True, "faulted": False, "kudos": 12.0, "generations": generations}
            )
        return super().answer(seen)


@dataclass
class FakeFal(FakeService):
    key: str = "fal-key-id:secret"
    waits: int = 2
    nsfw: bool = False
    jobs: dict[str, _Job] = field(default_factory=dict)
    ids: Any = field(default_factory=lambda: itertools.count(1))

    def answer(self, seen: Seen) -> Reply:
        if seen.path.startswith("/files/"):
            return Reply(200, self.picture(10, 10), {"Content-Type": "image/png"})
        if seen.headers.get("authorization") != f"Key {self.key}":
            return Reply.of({"detail": "Unauthorized"}, 401)
        app = "/fal-ai/flux/schnell"
        if (seen.method, seen.path) == ("POST", app):
            ident = f"f-{next(self.ids)}"
            self.jobs[ident] = _Job(self.waits, int(seen.json.get("num_images", 1)))
            base = f"{self.url}{app}/requests/{ident}"
            return Reply.of(
                {
                    "request_id": ident,
                    "status_url": f"{base}/status",
                    "response_url": base,
                    "cancel_url": f"{base}/cancel",
                    "queue_position": 1,
                }
            )
        prefix = f"{app}/requests/"
        if not seen.path.startswith(prefix):
            return super().answer(seen)
        ident, _, tail = seen.path.removeprefix(prefix).partition("/")
        job = self.jobs.get(ident)
        if job is None:
            return Reply.of({"detail": "Request not found"}, 404)
        if seen.method == "PUT" and tail == "cancel":
            job.cancelled = True
            return Reply.of({"status": "CANCELLATION_REQUESTED"}, 202)
        if tail == "status":
            if job.checks_left > 0:
                job.checks_left -= 1
                state = "IN_QUEUE" if job.checks_left > 0 else "IN_PROGRESS"
                return Reply.of({"status": state, "queue_position": job.checks_left}, 202)
            return Reply.of({"status": "COMPLETED", "response_url": seen.path}, 200)
        if tail == "":
            images = [
                {"url": f"{self.url}/files/{ident}-{i}.png", "width": 10, "height": 10}
                for i in range(job.n)
            ]
            return Reply.of(
                {"images": images, "seed": 99, "has_nsfw_concepts": [self.nsfw] * job.n}
            )
        return super().answer(seen)


@dataclass
class FakeReplicate(FakeService):
    """Replicate's predictions API (replicate.com/docs/reference/http: ``POST
    /v1/models/{owner}/{name}/predictions`` with Bearer → ``{id, status: "starting", urls: {get,
    cancel}}``; ``GET urls.get`` → ``status`` ``processing`` / ``succeeded`` (``output``: URLs) /
    ``failed`` (``error``); ``POST urls.cancel``)."""

    key: str = "r8_test"
    waits: int = 2
    error: str = ""  # fail every prediction with this error
    jobs: dict[str, _Job] = field(default_factory=dict)
    ids: Any = field(default_factory=lambda: itertools.count(1))

    def answer(self, seen: Seen) -> Reply:
        if seen.path.startswith("/files/"):
            return Reply(200, self.picture(9, 9), {"Content-Type": "image/png"})
        if seen.headers.get("authorization") != f"Bearer {self.key}":
            return Reply.of({"title": "Unauthenticated", "status": 401}, 401)
        if (seen.method, seen.path) == ("GET", "/v1/account"):
            return Reply.of({"type": "user", "username": "alice"})
        if seen.method == "POST" and seen.path.endswith("/predictions"):
            ident = f"p{next(self.ids)}"
            self.jobs[ident] = _Job(self.waits, int(seen.json["input"].get("num_outputs", 1)))
            return Reply.of(self._prediction(ident, "starting"), 201)
        ident = seen.path.removeprefix("/v1/predictions/").removesuffix("/cancel")
        job = self.jobs.get(ident)
        if job is None:
            return Reply.of({"detail": "Not found."}, 404)
        if seen.method == "POST" and seen.path.endswith("/cancel"):
            job.cancelled = True
            return Reply.of(self._prediction(ident, "canceled"))
        if job.checks_left > 0:
            job.checks_left -= 1
            return Reply.of(self._prediction(ident, "processing"))
        if self.error:
            return Reply.of({**self._prediction(ident, "failed"), "error": self.error})
        output = [f"{self.url}/files/{ident}-{i}.png" for i in range(job.n)]
        return Reply.of({**self._prediction(ident, "succeeded"), "output": output})

    def _prediction(self, ident: str, status: str) -> dict[str, Any]:
        base = f"{self.url}/v1/predictions/{ident}"
        return {
            "id": ident,
            "status": status,
            "urls": {"get": base, "cancel": f"{base}/cancel"},
            "output": None,
            "error": None,
        }


@dataclass
class FakeBFL(FakeService):
    """BFL's FLUX API (docs.bfl.ai: ``POST /v1/{model}`` with ``x-key`` → ``{id,
    polling_url}``; ``GET polling_url`` → ``{id, status: "Pending" | "Ready" | "Content
    Moderated" | "Error", result: {sample}}``, the sample a signed URL)."""

    key: str = "bfl-key"
    waits: int = 1
    moderated: bool = False
    jobs: dict[str, _Job] = field(default_factory=dict)
    ids: Any = field(default_factory=lambda: itertools.count(1))

    def answer(self, seen: Seen) -> Reply:
        if seen.path.startswith("/delivery/"):
            return Reply(200, self.picture(11, 7), {"Content-Type": "image/png"})
        if seen.headers.get("x-key") != self.key:
            return Reply.of({"detail": "Not authenticated"}, 403)
        if seen.method == "POST" and seen.path.startswith("/v1/flux"):
            ident = f"b{next(self.ids)}"
            self.jobs[ident] = _Job(self.waits, 1)
            return Reply.of({"id": ident, "polling_url": f"{self.url}/v1/get_result?id={ident}"})
        if (seen.method, seen.path) == ("GET", "/v1/get_result"):
            ident = seen.query.get("id", [""])[0]
            job = self.jobs.get(ident)
            if job is None:
                return Reply.of({"id": ident, "status": "Task not found"}, 404)
            if job.checks_left > 0:
                job.checks_left -= 1
                return Reply.of({"id": ident, "status": "Pending", "result": None})
            if self.moderated:
                return Reply.of({"id": ident, "status": "Content Moderated", "result": None})
            sample = f"{self.url}/delivery/{ident}/sample.png?se=signed"
            return Reply.of({"id": ident, "status": "Ready", "result": {"sample": sample}})
        return super().answer(seen)
