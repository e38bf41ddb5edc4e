"""The one typed, frozen configuration, built once and passed down.

Sources, lowest priority first: defaults, the TOML file, ``ST_IMAGEGEN_*`` environment variables
(nested keys with ``__``, e.g. ``ST_IMAGEGEN_IMAGE__API_KEY``). Each ``api_key`` can also come from
``api_key_file`` (Docker secrets). This is the only module that reads the environment.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from daemon.configure.locate import (
    APP_NAME,
    CONFIG_ENV,
    ENV_PREFIX,
    config_file,
    default_config_path,
    default_state_dir,
    scoped_env,
)
from daemon.configure.statepaths import StatePaths
from daemon.errors import ConfigError

__all__ = [
    "APP_NAME",
    "CONFIG_ENV",
    "ENV_PREFIX",
    "CommitSettings",
    "Config",
    "ConfigSource",
    "DetectSettings",
    "ImageSettings",
    "LimitsSettings",
    "LogSettings",
    "StyleSettings",
    "SystemdEnv",
    "TextSettings",
    "WebSettings",
    "default_config_path",
    "default_state_dir",
    "load_config",
    "read_config_file",
    "systemd_env",
]


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, None: 1.0}


def _parse_duration(value: object) -> object:
    """Turn "24h", "30m", "90s", "2d" or a number of seconds into seconds (float)."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError(f"not a duration: {value!r} (use e.g. 90s, 30m, 24h, 2d)")
        return float(match.group(1)) * _UNITS[match.group(2)]
    return value


Seconds = Annotated[float, BeforeValidator(_parse_duration), Field(ge=0)]

DEFAULT_SYSTEM_PROMPT = (
    "You write one prompt for an image generator from a roleplay message. Describe only what "
    "the scene shows at this moment: the characters' appearance and clothing, the setting, "
    "their action and pose, the mood and the lighting. Use concrete visual words, present "
    "tense, one paragraph, at most 80 words. Do not invent events that have not happened. "
    "Output only the prompt itself: no preamble, no explanations, no quotes, no labels."
)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _read_key_file(
    key: SecretStr, key_file: Path | None, section: str, name: str = "api_key_file"
) -> SecretStr:
    if key_file is None or key.get_secret_value():
        return key
    try:
        return SecretStr(key_file.read_text(encoding="utf-8").strip())
    except OSError as exc:
        raise ValueError(
            f"{section}.{name} {str(key_file)!r} cannot be read: {exc.strerror}"
        ) from None


class DetectSettings(_Section):
    """Which replies get a job."""

    users: list[str] = Field(default=[], description="ST user handles to watch; empty = all")
    include_characters: list[str] = Field(
        default=[], description="card file stems or display names; empty = all"
    )
    exclude_characters: list[str] = Field(default=[], description="never illustrate these")
    greetings: bool = Field(default=False, description="illustrate the first message of a new chat")
    every_nth: int = Field(default=1, ge=1, description="illustrate every Nth reply of a chat")
    min_length: int = Field(default=0, ge=0, description="skip replies shorter than this (chars)")
    settle_seconds: float = Field(
        default=2.0,
        ge=0,
        le=60,
        description="quiet time before acting on an edit or a swipe back (a finished reply "
        "is read at once)",
    )
    rescan_seconds: float = Field(
        default=60.0, gt=0, description="safety-net rescan interval (stat only)"
    )
    watch: Literal["auto", "inotify", "poll"] = Field(
        default="auto",
        description="how saves are noticed: auto (inotify, or a stat poll where its events do "
        "not arrive: network shares, WSL2 /mnt/c, Docker Desktop folders) | inotify | poll",
    )
    backfill: bool = Field(
        default=False, description="on first sight of a chat, illustrate its last reply too"
    )
    catchup_max_age: Seconds = Field(
        default=86400.0,
        description='replies older than this are not illustrated after downtime ("24h", "30m")',
    )


class TextSettings(_Section):
    """The prompt writer (chat completions)."""

    mode: Literal["llm", "template"] = Field(default="llm", description="llm | template")
    api_url: str = Field(
        default="", description="full .../v1/chat/completions URL, or a base URL ending in /v1"
    )
    api_key: SecretStr = Field(default=SecretStr(""), description="Bearer key; empty = none")
    api_key_file: Path | None = Field(default=None, description="read the key from this file")
    model: str = Field(default="gpt-4", description="model name")
    system_prompt: str = Field(default=DEFAULT_SYSTEM_PROMPT, description="instruction")
    temperature: float = Field(default=0.7, ge=0.0, le=2.0, description="0.0 to 2.0")
    max_tokens: int = Field(default=300, ge=1, description="answer budget")
    max_tokens_field: Literal["max_tokens", "max_completion_tokens"] = Field(
        default="max_tokens", description="name of the budget field the API expects"
    )
    include_character_card: bool = Field(
        default=True, description="send the card's name, description, personality, scenario"
    )
    context_messages: int = Field(default=0, ge=0, le=50, description="earlier messages as context")
    include_persona: Literal["never", "mentioned", "always"] = Field(
        default="mentioned",
        description="send the user persona's description (ST settings): never | mentioned "
        "(the reply names the user) | always",
    )
    template: str = Field(
        default="{{char}}: {{message}}", description='used when mode = "template"'
    )
    prefix: str = Field(default="", description="added before every prompt")
    suffix: str = Field(default="", description="added after every prompt")
    negative_prompt: str = Field(default="", description="sent where the image API supports it")
    max_prompt_chars: int = Field(default=1000, ge=16, description="prompt length cap")
    timeout_seconds: float = Field(default=60.0, gt=0, description="overall deadline per call")
    extra_body: dict[str, Any] = Field(default={}, description="merged into the request JSON")

    @model_validator(mode="after")
    def _key_from_file(self) -> TextSettings:
        object.__setattr__(self, "api_key", _read_key_file(self.api_key, self.api_key_file, "text"))
        return self


class ImageSettings(_Section):
    """The image generator: the keys every backend shares.

    A backend's own keys go in its own table, ``[image.<backend>]`` (e.g. ``[image.novelai]``),
    validated by that backend's settings model when it is built (``daemon.providers.registry``);
    here only "a table" is checked, since this module knows no backend's model.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    backend: str = Field(
        default="openai",
        description="openai (images/generations) | a1111 (A1111, Forge, SD.Next) | comfyui | "
        "openrouter | gemini | novelai | horde | fal | replicate | bfl",
    )
    api_url: str = Field(
        default="",
        description="openai: .../v1/images/generations or a base URL ending in /v1; "
        "a1111/comfyui: the server's address (http://127.0.0.1:7860, :8188)",
    )
    api_key: SecretStr = Field(default=SecretStr(""), description="Bearer key; empty = none")
    api_key_file: Path | None = Field(default=None, description="read the key from this file")
    profile: Literal[
        "auto",
        "generic",
        "openai",
        "airforce",
        "localai",
        "pollinations",
        "xai",
        "together",
        "nanogpt",
        "deepinfra",
    ] = Field(
        default="auto",
        description="openai backend's provider quirks: auto (by host) | generic | openai | "
        "airforce | localai | pollinations | xai | together | nanogpt | deepinfra",
    )
    model: str = Field(default="dall-e-3", description="model name")
    size: str = Field(default="1024x1024", description="WxH; empty = not sent")
    aspect_ratio: str = Field(default="", description="sent only when set")
    resolution: str = Field(default="", description="sent only when set")
    n: int = Field(default=1, ge=1, le=10, description="images per job")
    response_format: Literal["url", "b64_json"] = Field(default="url", description="url | b64_json")
    sse: bool = Field(default=False, description="ask for a server-sent-events answer")
    quality: str = Field(default="", description="sent only when set")
    output_format: str = Field(default="", description="png | jpeg | webp (gpt-image); when set")
    background: str = Field(default="", description="transparent | opaque | auto (gpt-image)")
    moderation: str = Field(default="", description="low | auto (gpt-image); sent only when set")
    style: str = Field(default="", description="vivid | natural (dall-e-3); sent only when set")
    output_compression: int | None = Field(
        default=None, ge=0, le=100, description="0-100 for jpeg/webp (gpt-image); when set"
    )
    max_response_bytes: int = Field(
        default=200 * 1024 * 1024,
        ge=1024,
        description="largest images API answer (JSON or SSE, base64 included)",
    )
    extra_body: dict[str, Any] = Field(default={}, description="merged into the request JSON")
    timeout_seconds: float = Field(default=180.0, gt=0, description="overall deadline per call")
    allow_private_urls: list[str] = Field(
        default=[], description="hosts whose private addresses downloads may use"
    )
    max_download_bytes: int = Field(
        default=50 * 1024 * 1024, ge=1024, description="largest image download"
    )
    max_pixels: int = Field(
        default=64_000_000, ge=1, description="largest accepted image (width x height)"
    )
    steps: int = Field(default=20, ge=1, le=500, description="sampling steps (a1111, comfyui)")
    cfg_scale: float = Field(default=7.0, ge=0, le=100, description="CFG scale (a1111, comfyui)")
    sampler: str = Field(
        default="", description="sampler name (a1111, comfyui); empty = the server's default"
    )
    scheduler: str = Field(
        default="", description="scheduler name (a1111, comfyui); empty = the server's default"
    )
    seed: int = Field(
        default=-1, ge=-1, description="-1 = a new random seed per job (a1111, comfyui)"
    )
    api_auth: SecretStr = Field(
        default=SecretStr(""),
        description='"user:password": HTTP basic auth (A1111 --api-auth, a proxy before ComfyUI)',
    )
    api_auth_file: Path | None = Field(default=None, description="read api_auth from this file")
    comfy_workflow: Path | None = Field(
        default=None, description="ComfyUI workflow in API format; empty = the shipped txt2img"
    )
    reference_field: str = Field(
        default="",
        description="JSON field a gateway takes references in (image_urls, input_references); "
        "empty = the profile's own way (OpenAI gpt-image: /images/edits)",
    )
    reference_images: bool = Field(
        default=False,
        description="send the character's avatar (or `character ref add` images) as references "
        "where the API takes them; per character: `character set NAME --references on|off`",
    )

    @model_validator(mode="after")
    def _key_from_file(self) -> ImageSettings:
        for key, value in (self.model_extra or {}).items():
            if not isinstance(value, dict):
                raise ValueError(
                    f"unknown key 'image.{key}' (a backend's own keys go in [image.<backend>])"
                )
        object.__setattr__(
            self, "api_key", _read_key_file(self.api_key, self.api_key_file, "image")
        )
        auth = _read_key_file(self.api_auth, self.api_auth_file, "image", "api_auth_file")
        object.__setattr__(self, "api_auth", auth)
        if self.backend != "openai" and "model" not in self.model_fields_set:
            # dall-e-3 means nothing to a local server: its loaded checkpoint is the default.
            object.__setattr__(self, "model", "")
        return self


class StyleSettings(_Section):
    """One named style (``[styles.<name>]``); the shipped ones can be overridden by name."""

    prefix: str = Field(default="", description="tags before the prompt")
    suffix: str = Field(default="", description="tags after the prompt")
    negative: str = Field(default="", description="added to the negative prompt")
    size: str = Field(default="", description="WxH for this style; empty = [image] size")
    model: str = Field(default="", description="image model for this style; empty = [image] model")


class CommitSettings(_Section):
    """The hidden image message written into the chat."""

    caption: str = Field(
        default="[{{char}} sends a picture: {{prompt}}]", description="template for mes"
    )
    hidden: bool = Field(default=True, description="is_system: true (hidden from the AI)")


class LimitsSettings(_Section):
    """Concurrency, retries and rate limits."""

    concurrency: int = Field(default=2, ge=1, le=64, description="jobs running at once")
    text_concurrency: int = Field(default=2, ge=1, le=64, description="prompt API calls at once")
    image_concurrency: int = Field(default=1, ge=1, le=64, description="image API calls at once")
    max_attempts: int = Field(default=5, ge=1, le=100, description="tries per job step")
    provider_attempts: int = Field(
        default=3, ge=1, le=20, description="tries per API call within one step (transient errors)"
    )
    retry_base_seconds: float = Field(default=5.0, gt=0, description="first retry delay")
    retry_max_seconds: float = Field(default=600.0, gt=0, description="longest retry delay")
    max_retry_after_seconds: float = Field(
        default=300.0, gt=0, description="cap on a server's Retry-After"
    )
    min_interval_seconds: float = Field(
        default=0.0, ge=0, description="minimum time between image API calls"
    )
    daily_budget: float | None = Field(
        default=None,
        ge=0,
        description="most USD spent on images per day (local time); a job that would cross it "
        "waits; empty = no cap",
    )
    monthly_budget: float | None = Field(
        default=None, ge=0, description="most USD spent on images per calendar month; empty: none"
    )
    chat_daily_images: int | None = Field(
        default=None, ge=1, description="most images made per chat per day; empty = no cap"
    )
    drain_seconds: float = Field(
        default=7.0,
        ge=0,
        le=3600,
        description="on SIGTERM, how long running steps may finish before they are cancelled "
        "and requeued (fits Docker's 10 s stop timeout)",
    )
    trash_days: float = Field(
        default=7.0,
        ge=0,
        le=3650,
        description="how long a rejected job's images are kept for Undo and Restore in History",
    )
    max_pending: int = Field(
        default=100,
        ge=0,
        le=100_000,
        description="images waiting for a decision before new jobs wait too (no paid call, no "
        "folder until some are accepted or rejected); 0 = no cap",
    )
    keep_history_days: float = Field(
        default=180.0,
        ge=1,
        le=36500,
        description="finished jobs' rows, superseded folders and thumbnails older than this are "
        "pruned daily (the images committed into ST's folders are ST's, never touched)",
    )


class LogSettings(_Section):
    """Logging."""

    level: Literal["debug", "info", "warning", "error"] = Field(default="info", description="")
    format: Literal["auto", "console", "json"] = Field(
        default="auto", description="auto: console on a terminal, JSON otherwise"
    )


_QUIET = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


def _check_quiet_hours(value: object) -> object:
    if isinstance(value, str) and value.strip():
        found = _QUIET.match(value)
        if not found or any(
            int(h) > 23 or int(m) > 59 for h, m in (found.group(1, 2), found.group(3, 4))
        ):
            raise ValueError(f"quiet_hours {value!r} is not like 22:00-07:00 (local time)")
    return value


class NotifySettings(_Section):
    """Push messages to a phone when pictures wait for a decision (Apprise URLs)."""

    urls: list[SecretStr] = Field(
        default=[],
        description="Apprise URLs (ntfy://…, tgram://…, discord://…, pover://…, mailto://…); "
        "they hold tokens: treated as secrets, never logged",
    )
    quiet_hours: Annotated[str, BeforeValidator(_check_quiet_hours)] = Field(
        default="",
        description='no push in these local hours, e.g. "22:00-07:00"; what waits is sent after',
    )
    batch_seconds: float = Field(
        default=60.0,
        ge=0,
        le=3600,
        description="one message for every job that became ready within this time",
    )
    failed: bool = Field(default=True, description="also tell when a job failed")
    link_url: str = Field(
        default="",
        description="the inbox's address in messages (default: the daemon's own web address)",
    )


class WebSettings(_Section):
    """The web inbox and its JSON API (served by `run`)."""

    enabled: bool = Field(default=True, description="serve the inbox and the API")
    host: str = Field(
        default="127.0.0.1", description="address to bind; not loopback = token required"
    )
    port: int = Field(default=8765, ge=0, le=65535, description="port (0: any free port)")
    token_file: Path | None = Field(
        default=None, description="read the token from this file (default: <state_dir>/web-token)"
    )
    require_token: bool | None = Field(
        default=None,
        description="true: a token even on loopback; false: none on loopback even with several "
        "ST users (a household); unset: tokens on loopback only when several users are watched",
    )
    allowed_origins: list[str] = Field(
        default=["http://127.0.0.1:8000", "http://localhost:8000"],
        description="pages that may call the API (CORS): SillyTavern's address",
    )
    hostnames: list[str] = Field(
        default=[], description="more Host names the inbox answers to (LAN name, proxy)"
    )
    sillytavern_url: str = Field(
        default="", description="SillyTavern's address, for links from the history page"
    )
    max_connections: int = Field(
        default=1024,
        ge=8,
        le=65536,
        description="connections held at once (never more than the descriptor limit minus a "
        "reserve for the engine); at the cap the oldest idle one is closed",
    )
    header_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        le=300,
        description="a connection that has not sent its request head by then is closed",
    )
    max_streams_per_token: int = Field(
        default=8, ge=1, le=1000, description="open event streams per token (browser tabs)"
    )


class Config(BaseSettings, StatePaths):
    """Everything the daemon and the commands need, validated once."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        case_sensitive=False,
    )

    data_root: Path | None = Field(
        default=None, description="the ST install folder, its data/ folder, or the data root"
    )
    state_dir: Path = Field(default_factory=default_state_dir, description="jobs, pending/, ...")
    mode: Literal["auto", "manual"] = Field(
        default="auto", description="auto: every new reply; manual: only `generate`"
    )
    approval: Literal["manual", "auto"] = Field(
        default="manual", description="manual: wait in pending/; auto: commit at once"
    )
    detect: DetectSettings = Field(default_factory=DetectSettings)
    text: TextSettings = Field(default_factory=TextSettings)
    image: ImageSettings = Field(default_factory=ImageSettings)
    commit: CommitSettings = Field(default_factory=CommitSettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    web: WebSettings = Field(default_factory=WebSettings)
    notify: NotifySettings = Field(default_factory=NotifySettings)
    prices: dict[str, Annotated[float, Field(ge=0)]] = Field(
        default={},
        description="[prices] model = USD per image, for spend estimates where the service does "
        "not report its cost (adds to or overrides the shipped estimates)",
    )
    default_style: str = Field(
        default="", description="style of chats and characters without their own; empty = none"
    )
    styles: dict[str, StyleSettings] = Field(
        default={},
        description="[styles.<name>] prefix, suffix, negative, size, model (adds to or "
        "overrides the shipped anime, painterly, photographic, ...)",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment wins over the file (passed as init kwargs); no dotenv, no secrets dir.
        return (env_settings, init_settings)


def _format_validation_error(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            lines.append(f"unknown key {key!r}")
        else:
            lines.append(f"{key}: {err['msg']}")
    return f"invalid configuration ({source}): " + "; ".join(lines)


_NAMED_KEY = re.compile(r"unknown key '([A-Za-z0-9_.]+)'")
_TOML_AT = re.compile(r"\(at line (\d+), column (\d+)\)")


def toml_error(path: Path, text: str, exc: tomllib.TOMLDecodeError) -> ConfigError:
    """A TOML syntax error that names the line, and shows it, so it can be found at once."""
    message = str(exc)
    match = _TOML_AT.search(message)
    if match is None:
        return ConfigError(f"config file {str(path)!r} is not valid TOML: {message}")
    line = int(match.group(1))
    what = message[: match.start()].strip()
    lines = text.splitlines()
    shown = lines[line - 1].strip() if 0 < line <= len(lines) else ""
    where = f"line {line}" + (f" ({shown[:120]})" if shown else "")
    return ConfigError(f"config file {str(path)!r} is not valid TOML: {where}: {what}", line=line)


_HEADER = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$")
_ASSIGN = re.compile(r"^\s*([A-Za-z0-9_.\"' -]+?)\s*=")


def _dotted(text: str) -> str:
    return ".".join(part.strip().strip("\"'") for part in text.split("."))


def key_line(text: str, key: str) -> int | None:
    """The line (1-based) of a config file that sets the dotted ``key`` (``image.size``), or
    its table's header; ``None`` when not found (it comes from the environment, say). A plain
    line scan: good for the files people write, where errors are looked for."""
    table = ""
    header_line: int | None = None
    for number, line in enumerate(text.splitlines(), 1):
        if match := _HEADER.match(line):
            table = _dotted(match.group(1))
            if table == key or key.startswith(table + "."):
                header_line = header_line or number
            continue
        if match := _ASSIGN.match(line):
            full = _dotted(match.group(1))
            full = f"{table}.{full}" if table else full
            if full == key or key.startswith(full + "."):
                return number
    return header_line


def read_config_file(path: Path) -> dict[str, Any]:
    """The TOML table of ``path``; ConfigError (with the line, for a syntax error) otherwise."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {str(path)!r} is a directory") from None
    except PermissionError:
        raise ConfigError(f"config file {str(path)!r} is not readable") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {str(path)!r} is not UTF-8 text: {exc.reason}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise toml_error(path, text, exc) from None


@dataclass(frozen=True)
class ConfigSource:
    """Where a config comes from: the file (and whether it was named), the ``ST_IMAGEGEN_*``
    environment, the command line's overrides. Kept so the daemon can load it again."""

    path: Path
    explicit: bool
    env: Mapping[str, str]
    overrides: Mapping[str, Any]

    @classmethod
    def find(
        cls,
        path: Path | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> ConfigSource:
        env = os.environ if environ is None else environ
        file_path, explicit = config_file(path, env)
        return cls(file_path, explicit, scoped_env(env), dict(overrides or {}))

    def load(self) -> Config:
        """Read and validate (ConfigError on any problem, with the file's line when known)."""
        if not (self.explicit or self.path.exists()):
            return self.build({})
        data = read_config_file(self.path)
        try:
            return self.build(data)
        except ConfigError as exc:
            if exc.key is None:
                raise
            try:
                line = key_line(self.path.read_text(encoding="utf-8"), exc.key)
            except OSError:
                raise exc from None
            if line is None:
                raise
            raise ConfigError(f"{exc} (line {line})", line=line, key=exc.key) from None

    def build(self, data: Mapping[str, Any]) -> Config:
        """Validate ``data`` (a config file's table) with this environment and overrides."""
        source = str(self.path) if data else "defaults and environment"
        _check_env_keys(self.env)
        merged = dict(data)
        for key, value in self.overrides.items():
            merged[key] = value
        try:
            return _build(merged, self.env)
        except ValidationError as exc:
            errors = exc.errors()
            key = ".".join(str(p) for p in errors[0]["loc"]) if errors else ""
            if errors and (named := _NAMED_KEY.search(str(errors[0].get("msg", "")))):
                key = named.group(1)  # a section's validator naming the key it refuses
            raise ConfigError(_format_validation_error(exc, source), key=key or None) from None
        except ValueError as exc:
            raise ConfigError(f"invalid configuration ({source}): {exc}") from None

    def fallback(self) -> Config:
        """A config for reporting when the file is unusable: the environment and overrides,
        with the file's ``data_root`` and ``state_dir`` when it can be read at all (so
        ``status`` still finds the daemon)."""
        data: dict[str, Any] = {}
        try:
            table = read_config_file(self.path)
            data = {k: table[k] for k in ("data_root", "state_dir") if k in table}
        except ConfigError:
            pass
        try:
            return self.build(data)
        except ConfigError:
            return self.build({})

    def pinned(self) -> dict[str, str]:
        """Keys the environment (or a command-line flag) sets: dotted key -> who sets it."""
        out: dict[str, str] = {}
        for var in self.env:
            name = var[len(ENV_PREFIX) :].lower()
            out[".".join(name.split("__"))] = var.upper()
        for key in self.overrides:
            out[key] = f"--{key.replace('_', '-')}"
        return out


def load_config(
    path: Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Build the config from ``path`` (or ``$ST_IMAGEGEN_CONFIG``, or the platform file).

    A missing default file is fine (defaults and environment apply); a missing explicit file is
    an error. ``overrides`` (from command-line flags) win over everything.
    """
    return ConfigSource.find(path, environ=environ, overrides=overrides).load()


_TOP_KEYS = {"data_root", "state_dir", "mode", "approval", "default_style"}


def _check_env_keys(env: Mapping[str, str]) -> None:
    """Refuse misspelled top-level environment variables (nested ones are checked by pydantic)."""
    sections = {"detect", "text", "image", "commit", "limits", "log", "web", "styles", "prices"}
    for key in env:
        name = key[len(ENV_PREFIX) :].lower()
        head = name.split("__", 1)[0]
        if head in sections and "__" in name:
            continue
        if name not in _TOP_KEYS:
            raise ConfigError(
                f"unknown environment variable {key} (top-level keys: "
                f"{', '.join(sorted(ENV_PREFIX + k.upper() for k in _TOP_KEYS))}; sections use "
                f"{ENV_PREFIX}<SECTION>__<KEY>)"
            )


def _build(data: dict[str, Any], env: Mapping[str, str]) -> Config:
    # pydantic-settings reads os.environ itself; hand it exactly the scoped mapping instead.
    class _Scoped(Config):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            from pydantic_settings import EnvSettingsSource

            source = EnvSettingsSource(settings_cls)
            source.env_vars = {k.lower(): v for k, v in env.items()}
            return (source, init_settings)

    built = _Scoped(**data)
    return Config.model_validate(built.model_dump())


@dataclass(frozen=True)
class SystemdEnv:
    """What systemd tells a ``Type=notify`` service through its environment."""

    notify_socket: str = ""
    watchdog_usec: int = 0


def systemd_env(environ: Mapping[str, str] | None = None) -> SystemdEnv:
    """Read ``$NOTIFY_SOCKET`` and ``$WATCHDOG_USEC`` (honouring ``$WATCHDOG_PID``)."""
    env = os.environ if environ is None else environ
    usec_text = env.get("WATCHDOG_USEC", "").strip()
    usec = int(usec_text) if usec_text.isdigit() else 0
    pid_text = env.get("WATCHDOG_PID", "").strip()
    if pid_text.isdigit() and int(pid_text) != os.getpid():
        usec = 0  # the watchdog is meant for another process
    return SystemdEnv(env.get("NOTIFY_SOCKET", ""), usec)
