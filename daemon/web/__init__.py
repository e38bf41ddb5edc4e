"""The web inbox and the JSON HTTP API under ``/api/v1/`` (see docs/http-api.md).

``app.py`` builds the Starlette app, ``api.py`` and ``pages.py`` its routes, ``events.py`` the
in-process job-change hub behind the event stream, ``security.py`` the token, Origin and Host
rules, ``thumbs.py`` the cached thumbnails, ``server.py`` runs it under uvicorn inside the
daemon's task group.
"""
