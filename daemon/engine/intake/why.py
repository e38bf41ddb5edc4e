"""Why one message of a chat has (or has no) job (``st-imagegen why``).

The answer comes from what the daemon recorded when it read the chat (each job's state and
reason; for a message with no job, the skip reason kept with the chat's cursor), and where
nothing was recorded, from the same rules detection applies.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.to_thread

from daemon.config import Config
from daemon.engine.intake import detect
from daemon.engine.jobs.manual import resolve_chat_spec
from daemon.engine.store import Job, Store
from daemon.errors import MessageNotFoundError
from daemon.jobstate import ReplyKey
from daemon.tavern import layout
from daemon.tavern.chat import Chat, Message, read_chat
from daemon.tavern.layout import ChatRef

__all__ = ["Explanation", "explain"]


@dataclass(frozen=True, slots=True)
class Explanation:
    """What ``why`` found for one message."""

    chat: str
    mesid: int
    speaker: str
    jobs: list[Job]
    current_revision: str
    reason: str  # for a message without a job: why; else ""


def _message(chat: Chat, mesid: int | None, where: str) -> Message:
    if mesid is None:
        for message in reversed(chat.messages):
            if message.marker is None:
                return message
        raise MessageNotFoundError(f"{where} has no messages")
    if not 0 <= mesid < len(chat.messages):
        have = f"messages 0 to {len(chat.messages) - 1}" if chat.messages else "no messages"
        raise MessageNotFoundError(f"there is no message {mesid} in {where}: it has {have}")
    return chat.messages[mesid]


def _rule_reason(message: Message, ctx: detect.ChatContext, config: Config, known: bool) -> str:
    """Why detection would not illustrate ``message``, judged now from the rules."""
    why = detect.eligible(message) or detect.filtered(message, ctx, config.detect)
    if why is not None:
        return why.value
    if config.mode == "manual":
        return detect.Skip.MANUAL.value
    if not known:
        return (
            "the daemon has not read this chat yet (is it running, and is the chat's user in "
            "detect.users?)"
        )
    return (
        "no record: it was history when the daemon first saw the chat, or is older than the "
        f"last {detect.DECIDED_KEPT} messages it remembers per chat"
    )


async def explain(
    config: Config, store: Store, root: Path, spec: str | None, mesid: int | None
) -> Explanation:
    """The jobs of one message, or why it has none."""
    users = await anyio.to_thread.run_sync(layout.list_users, root, config.detect.users)
    ref: ChatRef = await anyio.to_thread.run_sync(resolve_chat_spec, root, users, spec)
    chat, _ = await anyio.to_thread.run_sync(read_chat, ref.path)
    message = _message(chat, mesid, ref.rel)
    identity = message.identity
    jobs = await store.jobs_for(ReplyKey.of(ref.user, ref.rel, message))
    record = await store.get_chat(ref.rel)
    reason = ""
    if not jobs:
        state = detect.ChatState.from_data(record.data if record else None)
        recorded = state.skip_reason(identity.key)
        if recorded is not None:
            reason = recorded
        else:
            ctx = await anyio.to_thread.run_sync(
                lambda: detect.ChatContext.for_chat(root, ref, record.data if record else None)
            )
            reason = _rule_reason(message, ctx, config, known=record is not None)
    return Explanation(ref.rel, message.index, message.name, jobs, str(message.revision), reason)
