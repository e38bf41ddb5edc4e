"""The outside APIs: prompt writer and image generator. Async, no file system.

``text``      chat completions: PromptWriter (prompt writing, template mode, fallbacks)
``cleanup``   reply and answer cleaning (<think>, HTML, preambles, refusals, caps)
``images``    images/generations: ImageGenerator (JSON and SSE answers, url and b64)
``profiles``  provider kinds and their request quirks, as data
``sse``       the incremental server-sent-events decoder
``download``  guarded URL downloads (private addresses, redirects, caps)
``decode``    Pillow checks of image bytes; GeneratedImage
``http``      the shared client, error mapping, retries with backoff, pacing, the clock seam
"""
