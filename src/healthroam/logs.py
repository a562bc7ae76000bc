"""Application logging: one format, no personal data (callers log ids and counts only)."""

from __future__ import annotations

import logging


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        # The process id tells the processes of `healthroam serve --workers N` apart.
        format="%(asctime)s %(process)d %(levelname)s %(name)s %(message)s",
    )
