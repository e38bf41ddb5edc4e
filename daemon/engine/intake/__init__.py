"""Intake: watch the chats, read what changed, decide which replies become jobs, say why."""
