"""Changing the configuration while the daemon runs: the live holder, the safe writer, the
key files, the settings pages' field list."""
