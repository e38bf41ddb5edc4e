"""Commit: an accepted job's images into ST's images folder and a hidden message into the chat."""
