"""Logging shared by the command line and the extension: one format, no secrets, flushed exit."""

from __future__ import annotations

import logging
import os
import sys

FORMAT = "[cachelayer] %(levelname)s %(name)s: %(message)s"

# At DEBUG these log whole HTTP bodies, i.e. secret values; at INFO they chatter ("Found
# credentials in environment variables") in a style not ours: only their warnings get through.
QUIET_LIBRARIES = ("botocore", "boto3", "urllib3", "s3transfer")


def setup_logging(level: str = "INFO") -> None:
    """Log to stderr (CloudWatch adds the time) at ``level``: DEBUG, INFO, WARN(ING), ERROR,
    or NONE/OFF; the AWS libraries are held at WARNING or above whatever ``level`` says."""
    name = level.upper()
    name = {"WARN": "WARNING", "NONE": "CRITICAL", "OFF": "CRITICAL"}.get(name, name)
    logging.basicConfig(
        level=getattr(logging, name, logging.INFO), format=FORMAT, stream=sys.stderr, force=True
    )
    floor = max(logging.getLogger().level, logging.WARNING)
    for library in QUIET_LIBRARIES:
        logging.getLogger(library).setLevel(floor)


def exit_now(code: int) -> None:
    """Flush the logs and end the process at once.

    A worker thread blocked in an AWS call (a fetch in flight at SHUTDOWN or SIGTERM) would
    otherwise hold the interpreter's exit until its socket times out, past Lambda's deadline.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
