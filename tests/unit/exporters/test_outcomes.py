"""The one place where backend answers become retry decisions: outcome_for_http / outcome_for_exception."""
from __future__ import annotations

import errno
import socket

import pytest

from siemhub.exporters.base import Outcome, SendResult, outcome_for_endpoint, outcome_for_exception, outcome_for_http

DONE, RETRY, GIVE_UP = Outcome.DONE, Outcome.RETRY, Outcome.GIVE_UP


@pytest.mark.parametrize(("status", "outcome", "reason"), [
    (200, DONE, ""),
    (201, DONE, ""),
    (204, DONE, ""),
    (408, RETRY, "http_408"),
    (425, RETRY, "http_425"),
    (429, RETRY, "http_429"),
    (500, RETRY, "http_500"),
    (502, RETRY, "http_502"),
    (503, RETRY, "http_503"),
    (504, RETRY, "http_504"),
    (400, GIVE_UP, "http_400"),
    (401, GIVE_UP, "http_401"),
    (403, GIVE_UP, "http_403"),
    (404, GIVE_UP, "http_404"),
    (413, GIVE_UP, "http_413"),
    (501, GIVE_UP, "http_501"),
    (505, GIVE_UP, "http_505"),
    (302, GIVE_UP, "http_302"),
    (100, GIVE_UP, "http_100"),
])
def test_outcome_for_http(status, outcome, reason):
    r = outcome_for_http(status)
    assert isinstance(r, SendResult)
    assert (r.outcome, r.reason, r.items) == (outcome, reason, [])


@pytest.mark.parametrize(("status", "outcome"), [
    (200, DONE), (429, RETRY), (503, RETRY),
    # an endpoint not set up for us (credentials, wrong URL/port): held behind the breaker, not dead-lettered
    (401, RETRY), (403, RETRY), (404, RETRY), (405, RETRY), (415, RETRY),
    # the request itself is wrong: retrying the same bytes cannot help
    (400, GIVE_UP), (413, GIVE_UP), (501, GIVE_UP),
])
def test_outcome_for_endpoint(status, outcome):
    """The request-level answer every HTTP exporter (Elasticsearch, Splunk HEC, OTLP/HTTP) maps through."""
    r = outcome_for_endpoint(status, retry_after=7.0)
    assert (r.outcome, r.reason) == (outcome, "" if outcome is DONE else f"http_{status}")
    # Retry-After is carried only where the server asked for a pause
    assert r.retry_after == (7.0 if status in (429, 503) else None)


@pytest.mark.parametrize(("exc", "outcome", "reason"), [
    (TimeoutError("timed out"), RETRY, "TimeoutError"),
    (socket.timeout("timed out"), RETRY, "TimeoutError"),
    (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), RETRY, "ConnectionRefusedError"),
    (ConnectionResetError(errno.ECONNRESET, "reset"), RETRY, "ConnectionResetError"),
    (BrokenPipeError(errno.EPIPE, "broken pipe"), RETRY, "BrokenPipeError"),
    (OSError(errno.ENOSPC, "No space left on device"), RETRY, "ENOSPC"),
    (OSError(errno.EDQUOT, "Disk quota exceeded"), RETRY, "EDQUOT"),
    (OSError(errno.EIO, "I/O error"), RETRY, "EIO"),
    (OSError(errno.EHOSTUNREACH, "No route to host"), RETRY, "EHOSTUNREACH"),
    (PermissionError(errno.EACCES, "Permission denied"), GIVE_UP, "EACCES"),
    (OSError(errno.EROFS, "Read-only file system"), GIVE_UP, "EROFS"),
    (FileNotFoundError(errno.ENOENT, "No such file or directory"), GIVE_UP, "ENOENT"),
    (OSError(errno.EISDIR, "Is a directory"), GIVE_UP, "EISDIR"),
    (OSError("no errno at all"), GIVE_UP, "OSError"),
    (ValueError("bad payload"), GIVE_UP, "ValueError"),
    (KeyError("x"), GIVE_UP, "KeyError"),
])
def test_outcome_for_exception(exc, outcome, reason):
    r = outcome_for_exception(exc)
    assert (r.outcome, r.reason, r.items) == (outcome, reason, [])


def test_reasons_never_carry_the_exception_message():
    # Reasons become metric labels: short, bounded, and free of anything the message might contain.
    secret = "password=hunter2"
    for exc in (TimeoutError(secret), ValueError(secret), OSError(errno.ENOSPC, secret),
                PermissionError(errno.EACCES, secret, "/var/lib/" + secret)):
        assert secret not in outcome_for_exception(exc).reason
