"""SillyTavern's on-disk world: layout, chat codec, cards and safe edits.

Synchronous, no network, no daemon logic.
"""
