"""The web inbox as a user sees it, in a real browser (Playwright driving Debian's chromium).

1. Live latency: a job generated through the API (fake prompt and image APIs on loopback) until
   its card is visible in an open inbox page (the event stream), against the same pending
   folder's arrival seen by a bare watchdog handler in this process (the floor). Target: the
   card at most 1 s after the floor (the issue's "within a second"), median of the rounds.
2. Page load with 50 and with 1,000 pending jobs: first contentful paint (target: the paint
   with 1,000 within 1.2x of the paint with 50, since only the first page renders; and under
   300 ms), and how many thumbnails the first load fetches (lazy: not all of them). Two daemons
   (one with 50 pending, one with 1,000), both idle, loaded alternately by the same browser:
   on a shared machine two loads a few hundred ms apart see the same load, while two phases
   half a minute apart (the 950 jobs written in between) did not, and their ratio measured the
   machine's drift, up to 1.27x, as much as the page.
3. The viewer: a click on a card's picture until the full picture (a 1.4 MB PNG, from loopback)
   is decoded and shown (target: under 150 ms, median of the rounds).

Run: ``python -m bench inbox``.
"""

from __future__ import annotations

import io
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from bench.bench_engine import build_tree
from bench.common import stop, workdir
from tests.ops.fakeapi import GOOD_KEY, fake_api

FEW_JOBS = 50
PENDING_JOBS = 1000
IMAGES_PER_JOB = 2
ROUNDS = 8
LOADS = 15
"""Loads of each page; the best paint of each is compared. With 2 cores shared by several
processes one load's paint spreads from 70 to 450 ms; resampling 30 alternated loads of each
page (the same distribution: median ratio 1.02) put the ratio of two best-of-7 over 1.2 in 23 %
of runs, of two best-of-15 in 10 %: more loads of both, not a looser target."""
VIEWS = 7
LATENCY_TARGET = 1.0  # seconds above the floor
PAINT_TARGET = 0.300  # seconds
PAINT_RATIO_TARGET = 1.2  # paint with 1,000 pending / paint with 50
VIEWER_TARGET = 0.150  # seconds: click to the full picture shown
BIG_PNG_BYTES = 1_400_000
START_TIMEOUT = 60.0
STEP_TIMEOUT = 20.0
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (512, 512), (seed % 256, 90, 160)).save(buf, format="PNG")
    return buf.getvalue()


def _big_png(seed: int) -> bytes:
    """A PNG of about 1.4 MB (noise does not compress), as a real 832x1216 render weighs."""
    side = 700
    while True:
        noise = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3))
        buf = io.BytesIO()
        noise.save(buf, format="PNG")
        if buf.tell() >= BIG_PNG_BYTES or side > 2000:
            return buf.getvalue()
        side += 40


class _Img:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.format = "png"
        self.width = self.height = 512


def _pending_jobs(
    state: Path, chat: str, count: int, *, first: int = 0, big: bool = False
) -> list[str]:
    """``count`` pending jobs with their folders, through the real store and approval code;
    ``big``: 1.4 MB pictures (the viewer's test). Returns their ids."""
    import anyio

    from daemon.engine.jobs.approval import Approval
    from daemon.engine.store import JobState, ReplyKey, Store

    made: list[str] = []

    async def make() -> None:
        store = await Store.open(state / "state.db")
        approval = Approval(state)
        try:
            for n in range(first, first + count):
                job = await store.create_job(
                    reply=ReplyKey(
                        "default-user",
                        chat,
                        "Alice",
                        f"2025-01-01T00:{n // 60 % 60:02d}:{n % 60:02d}.{n:04d}Z",
                        "0:abc",
                    ),
                    character="Char0000",
                    is_group=False,
                    speaker="Alice",
                    message_index=1000 + n,
                    excerpt=f"Reply number {n}: the lantern over the pier glows.",
                    prompt=f"a lantern over a pier, variant {n}",
                )
                assert job is not None
                moved = await store.transition(job.id, JobState.QUEUED, JobState.IMAGING)
                assert moved is not None
                maker = _big_png if big else _png
                images = [_Img(maker(n * IMAGES_PER_JOB + i)) for i in range(IMAGES_PER_JOB)]
                approval.write_pending(moved, images, {})
                names = tuple(p.name for p in approval.kept_images(job.id))
                await store.transition(job.id, JobState.IMAGING, JobState.PENDING, images=names)
                made.append(job.id)
        finally:
            await store.close()

    anyio.run(make)
    return made


def _config(root: Path, state: Path, api_url: str) -> str:
    return (
        "\n".join(
            [
                f"data_root = {json.dumps(str(root))}",
                f"state_dir = {json.dumps(str(state))}",
                'mode = "manual"',
                "[text]",
                f"api_url = {json.dumps(api_url)}",
                f"api_key = {json.dumps(GOOD_KEY)}",
                "[image]",
                f"api_url = {json.dumps(api_url)}",
                f"api_key = {json.dumps(GOOD_KEY)}",
                "[web]",
                "port = 0",
                "[log]",
                'level = "warning"',
            ]
        )
        + "\n"
    )


class _Arrivals:
    """The floor: a bare watchdog handler noting when each job folder lands in pending/."""

    def __init__(self, pending: Path) -> None:
        from watchdog.events import FileSystemEvent, FileSystemEventHandler
        from watchdog.observers import Observer

        self.seen: dict[str, float] = {}
        self.lock = threading.Lock()
        arrivals = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                path = os.fsdecode(getattr(event, "dest_path", "") or event.src_path)
                name = Path(path).name
                if len(name) == 26 and not name.startswith("."):
                    with arrivals.lock:
                        arrivals.seen.setdefault(name, time.time())

        self.observer = Observer()
        self.observer.schedule(Handler(), str(pending), recursive=False)
        self.observer.start()

    def wait(self, job_id: str) -> float:
        deadline = time.monotonic() + STEP_TIMEOUT
        while time.monotonic() < deadline:
            with self.lock:
                if job_id in self.seen:
                    return self.seen[job_id]
            time.sleep(0.005)
        raise TimeoutError(f"job {job_id} never reached pending/")

    def stop(self) -> None:
        self.observer.stop()
        self.observer.join(5)


_SEEN_SCRIPT = """
() => {
  window.__cards = {};
  const note = () => {
    for (const el of document.querySelectorAll('.card[data-id]')) {
      if (!(el.dataset.id in window.__cards)) window.__cards[el.dataset.id] = Date.now() / 1000;
    }
  };
  note();
  new MutationObserver(note).observe(document.body, {childList: true, subtree: true});
}
"""


def _latency(page: Any, base: str, chat: str, pending: Path) -> list[float]:
    arrivals = _Arrivals(pending)
    out = []
    try:
        page.evaluate(_SEEN_SCRIPT)
        with httpx.Client(base_url=base, timeout=STEP_TIMEOUT) as client:
            for n in range(ROUNDS):
                answer = client.post(
                    "/api/v1/generate",
                    json={"chat": chat, "mesid": (0, 2, 4)[n % 3], "force": True},
                    headers={"Origin": base.rstrip("/")},
                )
                answer.raise_for_status()
                job_id = answer.json()["id"]
                floor = arrivals.wait(job_id)
                deadline = time.monotonic() + STEP_TIMEOUT
                # Polled from here: the page's CSP refuses the eval wait_for_function needs.
                while (shown := page.evaluate("id => window.__cards[id]", job_id)) is None:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"job {job_id} never showed in the inbox")
                    time.sleep(0.005)
                shown = float(shown)
                out.append(shown - floor)
    finally:
        arrivals.stop()
    return out


_PAINT_SCRIPT = """
(ms) => new Promise((done) => {
  // The paint may come after the load event and the first card on a busy machine: read then,
  // the entry was not there yet (a NaN that min() then kept or dropped by its position).
  const seen = (list) => list.getEntriesByName("first-contentful-paint")[0];
  const now = seen(performance);
  if (now) { done(now.startTime); return; }
  new PerformanceObserver((list, observer) => {
    const entry = seen(list);
    if (entry) { observer.disconnect(); done(entry.startTime); }
  }).observe({ type: "paint", buffered: true });
  setTimeout(() => done(null), ms);
})
"""


def _load(browser: Any, url: str) -> tuple[float, int]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    thumbs = []
    page.on("request", lambda r: thumbs.append(r.url) if "size=thumb" in r.url else None)
    page.goto(url, wait_until="load")
    page.wait_for_selector(".card[data-id]")
    paint = page.evaluate(_PAINT_SCRIPT, STEP_TIMEOUT * 1000)
    fetched = len(thumbs)
    context.close()
    if paint is None:
        raise TimeoutError(f"no first contentful paint within {STEP_TIMEOUT} s")
    return float(paint) / 1000, fetched


_VIEW_SCRIPT = """
async (id) => {
  const card = document.querySelector(`.card[data-id="${id}"] .cover .look`);
  const img = document.querySelector("#viewer .v-img");
  img.removeAttribute("src"); img.dataset.src = "";
  const started = performance.now();
  const shown = new Promise((ok) => img.addEventListener("load", () => ok(), { once: true }));
  card.click();
  await shown;
  await img.decode();
  await new Promise((ok) => requestAnimationFrame(() => ok()));
  const took = performance.now() - started;
  document.dispatchEvent(new KeyboardEvent("keydown", { key: "Escape", bubbles: true }));
  return took;
}
"""


def _served(url: str) -> float:
    """The inbox page's answer time from the daemon (best of 10), to tell server from browser."""
    best = float("inf")
    with httpx.Client(timeout=STEP_TIMEOUT) as client:
        for _ in range(10):
            started = time.perf_counter()
            client.get(url).raise_for_status()
            best = min(best, time.perf_counter() - started)
    return best


def _settled(state: Path, url: str) -> None:
    """Until the daemon has digested the folders just written (its watcher sees every one):
    the page's answer time stops falling."""
    last = float("inf")
    for _ in range(30):
        time.sleep(1.0)
        now = _served(url)
        if now >= last * 0.9:
            return
        last = now


def _viewer(browser: Any, url: str, job_id: str) -> list[float]:
    """Click to full picture, ``VIEWS`` times; the browser cache is off (a fresh fetch each)."""
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    page = context.new_page()
    client = context.new_cdp_session(page)
    client.send("Network.setCacheDisabled", {"cacheDisabled": True})
    page.goto(url, wait_until="load")
    page.wait_for_selector(f'.card[data-id="{job_id}"] .cover .look')
    out = [float(page.evaluate(_VIEW_SCRIPT, job_id)) / 1000 for _ in range(VIEWS)]
    context.close()
    return out


class _Daemon:
    """A daemon on its own data root and state dir with ``jobs`` pending (the newest card a
    1.4 MB picture, for the viewer), serving its inbox on a free loopback port."""

    def __init__(self, home: Path, api_url: str, jobs: int) -> None:
        home.mkdir()
        root = home / "data"
        (path,) = build_tree(root, 1)
        self.chat = path.relative_to(root).as_posix()
        self.state = home / "state"
        self.state.mkdir()
        _pending_jobs(self.state, self.chat, FEW_JOBS - 1)
        (self.big,) = _pending_jobs(self.state, self.chat, 1, first=FEW_JOBS, big=True)
        _pending_jobs(self.state, self.chat, jobs - FEW_JOBS, first=FEW_JOBS + 1)
        cfg = home / "config.toml"
        cfg.write_text(_config(root, self.state, api_url), encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ST_IMAGEGEN_", "NOTIFY_"))}
        self.log = (home / "daemon.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "daemon", "run", "--config", str(cfg)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        self.url = ""

    def wait_url(self) -> str:
        from daemon.web.server import read_address

        deadline = time.monotonic() + START_TIMEOUT
        while (address := read_address(self.state)) is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the daemon did not start its web inbox (see {self.log.name})")
            time.sleep(0.1)
        self.url = str(address["url"])
        return self.url

    def stop(self) -> None:
        stop(self.proc)
        self.log.close()


def main() -> int:
    from playwright.sync_api import sync_playwright

    with workdir() as tmp, fake_api() as api:
        daemons: list[_Daemon] = []
        try:
            daemons.append(few_daemon := _Daemon(tmp / "few", api.base_url, FEW_JOBS))
            daemons.append(many_daemon := _Daemon(tmp / "many", api.base_url, PENDING_JOBS))
            try:
                url, many_url = few_daemon.wait_url(), many_daemon.wait_url()
            except RuntimeError as error:
                print(f"  {error}")
                return 1
            _settled(few_daemon.state, url)
            _settled(many_daemon.state, many_url)
            served_few = _served(url)
            served_many = _served(many_url)
            few: list[tuple[float, int]] = []
            many: list[tuple[float, int]] = []
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                for n in range(LOADS):
                    # Alternated, each first in turn: neither gets the quieter moments.
                    order = [(few, url), (many, many_url)]
                    for into, where in order if n % 2 == 0 else order[::-1]:
                        into.append(_load(browser, where))
                views = _viewer(browser, url, few_daemon.big)
                context = browser.new_context(viewport={"width": 1280, "height": 900})
                page = context.new_page()
                page.goto(url, wait_until="load")
                page.wait_for_selector(".card[data-id]")
                latencies = _latency(page, url, few_daemon.chat, few_daemon.state / "pending")
                context.close()
                browser.close()
        finally:
            for daemon in daemons:
                daemon.stop()
    median = statistics.median(latencies)
    paint_few = min(p for p, _ in few)
    paint = min(p for p, _ in many)
    fetched = min(f for _, f in many)
    viewer = statistics.median(views)
    print(
        f"  card visible after the pending folder's arrival (event stream), {ROUNDS} rounds: "
        f"median {median * 1000:.0f} ms, worst {max(latencies) * 1000:.0f} ms"
    )
    print(
        f"  first contentful paint (best of {LOADS}): {FEW_JOBS} pending {paint_few * 1000:.0f} "
        f"ms, {PENDING_JOBS} pending {paint * 1000:.0f} ms; thumbnails fetched by the first "
        f"load: {fetched} of {PENDING_JOBS * IMAGES_PER_JOB}; the page's answer from the daemon "
        f"{served_few * 1000:.0f} ms and {served_many * 1000:.0f} ms"
    )
    print(
        f"  viewer: click to the full {BIG_PNG_BYTES / 1e6:.1f} MB PNG shown, {VIEWS} rounds "
        f"(no browser cache): median {viewer * 1000:.0f} ms, worst {max(views) * 1000:.0f} ms"
    )
    ok = True
    ratio = paint / paint_few if paint_few > 0 else float("inf")
    for label, value, target in (
        ("card after the floor (s)", median, LATENCY_TARGET),
        (f"first paint with {PENDING_JOBS} pending (s)", paint, PAINT_TARGET),
        (f"paint {PENDING_JOBS} / paint {FEW_JOBS}", ratio, PAINT_RATIO_TARGET),
        ("viewer open to full picture (s)", viewer, VIEWER_TARGET),
    ):
        met = value <= target
        ok &= met
        print(f"  {label:<52} {value:>8.3f}   target <= {target} {'ok' if met else 'MISSED'}")
    lazy = fetched < PENDING_JOBS * IMAGES_PER_JOB
    ok &= lazy
    print(
        f"  {'thumbnails are lazy (fetched < all)':<52} {fetched:>8}   {'ok' if lazy else 'MISSED'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
