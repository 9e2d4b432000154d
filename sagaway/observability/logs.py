"""Log lines as text (for a terminal) or JSON (one object per line, for a log pipeline), both
carrying the correlation id, saga id and message id being handled — set by the consuming loops
and the gateway through a context variable — and neither ever showing a secret.

    configure_logging(settings.observability, secrets=settings.secret_values())  # the CLI, once
    token = bind(message)                    # while handling one message (or a RequestContext)
    ...
    reset(token)
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, Sequence
from contextvars import ContextVar, Token
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any, Protocol

import orjson

from sagaway.settings import ObservabilitySettings

CONTEXT_FIELDS = ("correlation_id", "saga_id", "message_id")
REDACTED = "***"


class LogContext(Protocol):
    """What a log line is about: a `Message` is one, and so is a `RequestContext`."""

    @property
    def correlation_id(self) -> str | None: ...

    @property
    def saga_id(self) -> str | None: ...

    @property
    def message_id(self) -> str | None: ...


@dataclass(slots=True)
class RequestContext:
    """The context of work that is not one consumed message (an HTTP request, a timer)."""

    correlation_id: str | None = None
    saga_id: str | None = None
    message_id: str | None = None


_current: ContextVar[LogContext | None] = ContextVar("sagaway_log_context", default=None)


def bind(context: LogContext | None) -> Token[LogContext | None]:
    """Make `context` the one this task's log lines carry (a Message is bound as is: no copy)."""
    return _current.set(context)


def reset(token: Token[LogContext | None]) -> None:
    _current.reset(token)


def current() -> LogContext | None:
    return _current.get()


# ---------------------------------------------------------------- secrets


# user:password@ in any URL; bearer tokens; API keys in header-like text.
_URL_CREDENTIALS = re.compile(r"(?P<keep>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)[^@\s]+@")
_BEARER = re.compile(r"(?P<keep>\b[Bb]earer\s+)[A-Za-z0-9._~+/=-]+")
_KEY_VALUE = re.compile(
    r"(?P<keep>(?:x-api-key|api[_-]?key|authorization|password|passwd|secret|token)"
    r"[\"']?\s*[:=]\s*[\"']?)[^\s\"',;}]+",
    re.IGNORECASE,
)


# A secret this short and plain may also be a word of our own (the compose file's default
# password is `sagaway`): it is hidden only where it stands alone. A longer or mixed one (what a
# generator makes) is hidden wherever it appears, even inside a longer token.
_WORD_LIKE = re.compile(r"[A-Za-z0-9]{1,15}")


def _secret_pattern(secret: str) -> re.Pattern[str]:
    """Where `secret` is to be hidden. A word-like one only where it stands as a value of its
    own — between spaces, quotes, `:`, `@`, `/`, `=` or at the end of a sentence — so that
    `user:sagaway@db` is hidden but `sagaway.orchestrator` and the slot `sagaway_payments`
    stay readable."""
    if _WORD_LIKE.fullmatch(secret):
        return re.compile(rf"(?<![\w.-]){re.escape(secret)}(?![\w-]|\.\w)")
    return re.compile(re.escape(secret))


class Redactor:
    """Replaces secrets in log text with ***: the values configured as secrets (passwords of
    database URLs, signing keys) wherever they appear, and anything shaped like a credential
    (URL user:password@, `Bearer <token>`, `X-API-Key: <key>`, `password=...`)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first, so a secret containing another is replaced whole; very short values
        # would blank out ordinary words and are left to the patterns.
        self.secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)
        self._patterns = [(secret, _secret_pattern(secret)) for secret in self.secrets]

    def __call__(self, text: str) -> str:
        for secret, pattern in self._patterns:
            if secret in text:
                text = pattern.sub(REDACTED, text)
        if "://" in text:
            text = _URL_CREDENTIALS.sub(rf"\g<keep>{REDACTED}@", text)
        text = _BEARER.sub(rf"\g<keep>{REDACTED}", text)
        return _KEY_VALUE.sub(rf"\g<keep>{REDACTED}", text)


# ---------------------------------------------------------------- formatting


class ContextFilter(logging.Filter):
    """Stamps each record with the ids of the bound context when it is made (handlers that
    format later, in another task, still see the right ids)."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = _current.get()
        if context is not None:
            for name in CONTEXT_FIELDS:
                if not hasattr(record, name):
                    setattr(record, name, getattr(context, name, None))
        return True


def _iso(created: float) -> str:
    return (
        datetime.fromtimestamp(created, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the context ids when known,
    and `exception` (the traceback) when there is one."""

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__()
        self.redact = redactor or Redactor()

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": _iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": self.redact(record.getMessage()),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                document[name] = value
        if record.exc_info:
            document["exception"] = self.redact(self.formatException(record.exc_info))
        if record.stack_info:
            document["stack"] = self.redact(self.formatStack(record.stack_info))
        return orjson.dumps(document, default=str).decode()


class TextFormatter(logging.Formatter):
    """`time LEVEL logger message [correlation_id=... saga_id=... message_id=...]`, redacted."""

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")
        self.redact = redactor or Redactor()

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        ids = " ".join(
            f"{name}={value}"
            for name in CONTEXT_FIELDS
            if (value := getattr(record, name, None)) is not None
        )
        if ids:
            first, newline, rest = text.partition("\n")
            text = f"{first} [{ids}]{newline}{rest}"
        return self.redact(text)


def make_handler(
    settings: ObservabilitySettings,
    stream: IO[str] | None = None,
    *,
    secrets: Sequence[str] = (),
) -> logging.Handler:
    """A stream handler (stderr by default) formatting as `settings.log_format` says, that never
    prints any of `secrets` (the composition root passes every configured one)."""
    redactor = Redactor(list(secrets))
    handler = logging.StreamHandler(stream or sys.stderr)
    formatter: logging.Formatter = (
        JsonFormatter(redactor) if settings.log_format == "json" else TextFormatter(redactor)
    )
    handler.setFormatter(formatter)
    handler.addFilter(ContextFilter())
    handler._sagaway = True  # type: ignore[attr-defined]  # ours: replaced on reconfiguration
    return handler


def configure_logging(
    settings: ObservabilitySettings,
    stream: IO[str] | None = None,
    *,
    secrets: Sequence[str] = (),
) -> logging.Handler:
    """Send the root logger's records to one handler of ours (replacing an earlier one) at
    `settings.log_level`; returns the handler."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_sagaway", False)]:
        root.removeHandler(old)
    handler = make_handler(settings, stream, secrets=secrets)
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    return handler


__all__ = [
    "ContextFilter",
    "JsonFormatter",
    "LogContext",
    "Redactor",
    "RequestContext",
    "TextFormatter",
    "bind",
    "configure_logging",
    "current",
    "make_handler",
    "reset",
]
