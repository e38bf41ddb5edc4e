"""st-imagegen: an automatic illustrator for SillyTavern chats."""

__version__ = "0.1.0"
