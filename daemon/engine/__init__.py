"""The daemon itself: watcher, detection, store, jobs, approval, commit, service."""
