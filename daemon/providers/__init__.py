"""The outside APIs: prompt writer and image generator. Async, no file system."""
