"""Settings as small value objects: the secret key, timeouts, retries, limits, and their resolution.

Resolution order is always: explicit argument > environment variable > default.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field, replace
from hashlib import pbkdf2_hmac
from pathlib import Path

from holynb.errors import ConfigurationError, MissingAPIKeyError

DEFAULT_BASE_URL = "https://api.holysheep.ai/v1"
DEFAULT_MODEL = "gpt-4.1"
KEY_ENV_VARS = ("HOLYSHEEP_API_KEY", "HOLYNB_API_KEY")
BASE_URL_ENV = "HOLYNB_BASE_URL"
MODEL_ENV = "HOLYNB_MODEL"
LOCAL_MODEL = "local/echo"  # the offline server's default model
API_ENV = "HOLYNB_API"
APIS = ("openai", "anthropic")  # the wire formats a session can speak (see holynb._wire)
MAX_EVENT_BYTES = 64 * 1024 * 1024  # the largest stream event accepted by default
TOKEN_PREFIX = "holynb-local-"  # the start of every token a holynb LocalServer makes
OFFLINE_IDENTITY = "holynb-offline"  # holynb's own offline server, in keys (whatever its port)
# The salt and cost of a key's fingerprint (see Secret.fingerprint): never change them, or
# every stored answer becomes a miss.
_FINGERPRINT_SALT = b"holynb answer owner v1"
_FINGERPRINT_ROUNDS = 50_000


class Unchanged:
    """The default of arguments where ``None`` has a meaning (``Session.derive(budget_usd=)``)."""

    def __repr__(self) -> str:
        return "UNCHANGED"


UNCHANGED = Unchanged()


class Secret:
    """An API key that never shows itself in a repr, str, format or pickle.

    >>> Secret("sk-abc123")
    Secret('sk-...***')
    """

    __slots__ = ("_fingerprint", "_value")

    def __init__(self, value: str) -> None:
        self._value = value
        self._fingerprint: str | None = None

    def get(self) -> str:
        """The key itself; only the transport calls this, to build the Authorization header."""
        return self._value

    def redact(self, text: str) -> str:
        """``text`` with the key blotted out (``***``), for anything shown or stored."""
        v = self._value
        return text.replace(v, "***") if v and v in text else text

    def redact_bytes(self, data: bytes) -> bytes:
        """``redact`` for bytes (a file from the provider, before it is kept)."""
        v = self._value.encode()
        return data.replace(v, b"***") if v and v in data else data

    @property
    def fingerprint(self) -> str:
        """A one-way digest of the key that says whose a stored answer is, safe to keep in a
        shared file: PBKDF2-HMAC-SHA256 over the key with holynb's own salt, 50,000 rounds
        (about 25 ms, once per key and process).

        The salt is fixed so that one key gives one fingerprint on every machine (a shared
        cache file works); it makes tables precomputed for plain sha256 useless, and the rounds
        make each guess cost 50,000 hashes, so a short key cannot be recovered cheaply from a
        file. (Keys that providers issue are long random strings: no guessing reaches them.)
        """
        if self._fingerprint is None:
            digest = pbkdf2_hmac(
                "sha256", self._value.encode(), _FINGERPRINT_SALT, _FINGERPRINT_ROUNDS
            )
            self._fingerprint = digest.hex()
        return self._fingerprint

    @property
    def masked(self) -> str:
        """A hint of the key's shape (its prefix), safe to show."""
        v = self._value
        prefix = v[:3] if len(v) > 12 else ""
        return f"{prefix}...***"

    def __repr__(self) -> str:
        return f"Secret({self.masked!r})"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("holynb.Secret cannot be pickled: API keys are never stored.")


@dataclass(frozen=True, slots=True)
class Timeout:
    """Timeouts in seconds: ``connect`` to open a connection, ``read`` between two chunks of an
    answer (for a stream: between two events), ``total`` for a whole call including retries and
    reading the whole answer (None for no limit).

    ``total`` starts when the request is first sent: time spent waiting in holynb's own queue
    (for a free ``concurrency`` slot, or for ``rpm``/``tpm`` pacing) does not count, so a call
    queued behind slow ones still gets its full time once it is sent instead of being sent,
    cut off and charged.

    >>> Timeout(connect=5, read=60, total=300)
    """

    connect: float = 5.0
    read: float = 60.0
    total: float | None = 600.0

    @classmethod
    def coerce(cls, value: Timeout | float | int | None) -> Timeout:
        """A Timeout from a number (used as read timeout and total), a Timeout, or None."""
        if value is None:
            return cls()
        if isinstance(value, Timeout):
            return value
        if isinstance(value, (int, float)) and value > 0:
            return cls(connect=min(5.0, float(value)), read=float(value), total=float(value))
        raise ConfigurationError(
            f"timeout must be a positive number of seconds or holynb.Timeout(...), got {value!r}."
        )


RETRY_STATUSES = frozenset({408, 409, 429})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When and how long to wait before retrying.

    Retried: connection errors, timeouts, 408, 409, 429 and 5xx (``x-should-retry`` overrides).
    The wait is ``min(initial * 2**n, max_delay)`` times a random factor in [0.75, 1], or the
    server's Retry-After when it sends one; a Retry-After longer than ``max_retry_after`` means
    give up at once.
    """

    max_retries: int = 2
    initial_delay: float = 0.5
    max_delay: float = 8.0
    max_retry_after: float = 120.0

    def should_retry_status(self, status: int) -> bool:
        """Whether an HTTP status is worth another attempt."""
        return status in RETRY_STATUSES or status >= 500


@dataclass(frozen=True, slots=True)
class Limits:
    """How much the session may ask at once: ``concurrency`` requests in flight, ``rpm``
    requests per minute and ``tpm`` tokens per minute (None = unlimited); and
    ``max_event_bytes``, the largest stream event accepted before the stream is stopped with
    StreamError."""

    concurrency: int = 16
    rpm: float | None = None
    tpm: float | None = None
    max_event_bytes: int = MAX_EVENT_BYTES

    def __post_init__(self) -> None:
        if not isinstance(self.concurrency, int) or self.concurrency < 1:
            raise ConfigurationError(
                f"concurrency must be a whole number >= 1, got {self.concurrency!r}."
            )
        for name in ("rpm", "tpm"):
            v = getattr(self, name)
            if v is not None and not v > 0:
                raise ConfigurationError(f"{name} must be > 0 or None, got {v!r}.")
        if not isinstance(self.max_event_bytes, int) or self.max_event_bytes < 1:
            raise ConfigurationError(
                f"max_event_bytes must be a whole number >= 1, got {self.max_event_bytes!r}."
            )


@dataclass(frozen=True)
class Settings:
    """Everything the client needs to talk to one endpoint.

    ``api`` is the wire format: ``"openai"`` (chat completions, the default) or
    ``"anthropic"`` (Anthropic's Messages API, key sent as ``x-api-key``). ``bearer`` True also
    sends the key as ``Authorization: Bearer`` in Anthropic's format, for relays that want it
    (OpenAI's format always does).
    """

    base_url: str
    api_key: Secret | None
    model: str
    timeout: Timeout = field(default_factory=Timeout)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    limits: Limits = field(default_factory=Limits)
    api: str = "openai"
    bearer: bool | None = None

    def require_key(self) -> Secret:
        """The key, or a MissingAPIKeyError that says how to get going."""
        if self.api_key:
            return self.api_key
        raise MissingAPIKeyError(
            "No API key: set HOLYSHEEP_API_KEY (or HOLYNB_API_KEY), or pass "
            "Session(api_key=...). To work offline, run `holynb serve` and paste the export "
            "lines it prints, or use holynb.local_session()."
        )


def env_api_key(environ: os._Environ[str] | dict[str, str] | None = None) -> Secret | None:
    """The API key from the environment, if any."""
    env = os.environ if environ is None else environ
    for name in KEY_ENV_VARS:
        value = env.get(name, "").strip()
        if value:
            return Secret(value)
    return None


def is_loopback_url(url: str) -> bool:
    """Whether ``url`` points at this machine (127.0.0.0/8, localhost, [::1])."""
    import ipaddress
    from urllib.parse import urlsplit

    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# -- holynb's own offline servers in this process ------------------------------------------------

_offline_servers: dict[str, Secret] = {}
_offline_lock = threading.Lock()


def _offline_key(base_url: str) -> str:
    from urllib.parse import urlsplit

    url = base_url.strip().rstrip("/").removesuffix("/v1")  # the root URL is the same server
    parts = urlsplit(url)
    if parts.hostname == "localhost":  # the same server under its other loopback name
        url = url.replace("//localhost", "//127.0.0.1", 1)
    return url


def register_offline_server(base_url: str, token: Secret) -> None:
    """Record that a holynb LocalServer in this process serves ``base_url`` with ``token``, so
    sessions on that URL send the token without being told (called by the server on start)."""
    with _offline_lock:
        _offline_servers[_offline_key(base_url)] = token


def unregister_offline_server(base_url: str) -> None:
    """Forget ``base_url`` (called by the server on stop)."""
    with _offline_lock:
        _offline_servers.pop(_offline_key(base_url), None)


def _offline(base_url: str) -> bool:
    """Whether ``base_url`` is holynb's own offline server in this process (it has no
    ``DEFAULT_MODEL``: a session there without a model asks ``local/echo``)."""
    return offline_server_token(base_url) is not None


def offline_server_token(base_url: str) -> Secret | None:
    """The token of the holynb LocalServer running in this process at ``base_url``, if any."""
    return _offline_servers.get(_offline_key(base_url))


def is_offline_server(settings: Settings) -> bool:
    """Whether ``settings`` talk to holynb's own offline server: a LocalServer running in this
    process, or one in another process (``holynb serve``, another kernel) reached on loopback
    with a token it made (they start with ``TOKEN_PREFIX``)."""
    if offline_server_token(settings.base_url) is not None:
        return True
    key = settings.api_key
    return (
        key is not None
        and key.get().startswith(TOKEN_PREFIX)
        and is_loopback_url(settings.base_url)
    )


def endpoint_identity(settings: Settings) -> str:
    """The endpoint as stored answers (cache, checkpoint) and batch manifests know it:
    ``OFFLINE_IDENTITY`` for holynb's own offline server, whatever its port and token (its
    answers are the same on every run, so a re-run after a kernel restart, on a new port, still
    finds them); otherwise the base URL without a trailing slash.

    >>> endpoint_identity(Settings(base_url="https://api.holysheep.ai/v1/", ...))
    'https://api.holysheep.ai/v1'
    """
    if is_offline_server(settings):
        return OFFLINE_IDENTITY
    return settings.base_url.strip().rstrip("/")


def credential_identity(settings: Settings) -> str:
    """Whose credential asks, as stored answers know it: the key's ``fingerprint`` (never the
    key), ``""`` without a key, and ``OFFLINE_IDENTITY`` for holynb's offline server (its
    token changes every run; its answers do not)."""
    if is_offline_server(settings):
        return OFFLINE_IDENTITY
    return settings.api_key.fingerprint if settings.api_key else ""


def normalize_base_url(url: str) -> str:
    """The base URL without a trailing slash; an error for anything that is not http(s)."""
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ConfigurationError(
            f"base_url must start with http:// or https://, got {url!r} "
            f"(for example {DEFAULT_BASE_URL})."
        )
    return url


def normalize_api(api: str) -> str:
    """The wire format's name in lower case; an error naming the choices for anything else."""
    name = api.strip().lower() if isinstance(api, str) else api
    if name not in APIS:
        raise ConfigurationError(
            f"api must be one of {', '.join(map(repr, APIS))} (the wire format: OpenAI's chat "
            f"completions or Anthropic's Messages API), got {api!r}."
        )
    return name


def resolve_settings(
    *,
    api: str | None = None,
    bearer: bool | None = None,
    base_url: str | None = None,
    api_key: str | Secret | None = None,
    model: str | None = None,
    timeout: Timeout | float | None = None,
    max_retries: int | None = None,
    retry: RetryPolicy | None = None,
    concurrency: int | None = None,
    rpm: float | None = None,
    tpm: float | None = None,
) -> Settings:
    """Settings from explicit arguments, then the environment, then defaults.

    Without an explicit ``api_key``, a base URL served by a holynb LocalServer in this process
    gets that server's token (not the environment's key, which belongs to the real API)."""
    env = os.environ
    url = normalize_base_url(base_url or env.get(BASE_URL_ENV) or DEFAULT_BASE_URL)
    if isinstance(api_key, str):
        key: Secret | None = Secret(api_key.strip()) if api_key.strip() else None
    elif api_key is not None:
        key = api_key
    else:
        key = offline_server_token(url) or env_api_key()
    if max_retries is not None and (not isinstance(max_retries, int) or max_retries < 0):
        raise ConfigurationError(f"max_retries must be a whole number >= 0, got {max_retries!r}.")
    policy = retry or RetryPolicy()
    if max_retries is not None:
        policy = replace(policy, max_retries=max_retries)
    return Settings(
        base_url=url,
        api_key=key,
        model=model or env.get(MODEL_ENV) or (LOCAL_MODEL if _offline(url) else DEFAULT_MODEL),
        timeout=Timeout.coerce(timeout),
        retry=policy,
        limits=Limits(concurrency=16 if concurrency is None else concurrency, rpm=rpm, tpm=tpm),
        api=normalize_api(api or env.get(API_ENV) or "openai"),
        bearer=bearer,
    )


HOME_ENV = "HOLYNB_HOME"


def holynb_home() -> Path:
    """Where holynb keeps its state (the default cache, the batch manifest): ``HOLYNB_HOME``
    (``~`` expanded), else ``~/.holynb``. Not created here."""
    value = os.environ.get(HOME_ENV, "").strip()
    return Path(value or "~/.holynb").expanduser()
