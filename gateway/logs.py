"""Structured logging: JSON lines on stderr through structlog.

Events are snake_case with keyword fields; request context (request id, RPC, org) is bound
once per call through contextvars. Nothing here ever receives a card number, an ID number or a
name: callers log pseudonyms and reasons only. Tests assert on events with
``structlog.testing.capture_logs()``.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal

import structlog

LogFormat = Literal["json", "console"]


def configure(level: str = "info", fmt: LogFormat = "json") -> None:
    """Configure structlog for the process (call once, from the command line entry point)."""
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer(ensure_ascii=False)
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
