"""Process: the daemon process itself (service, lock, heartbeat, wake-ups, status)."""
