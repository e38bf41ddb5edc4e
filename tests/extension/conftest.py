"""The extension's tests reuse the engine's fixtures (fake API, configs)."""

# ruff: noqa: F401 - fixtures are found by name

from tests.engine.conftest import fake_api, make_config
