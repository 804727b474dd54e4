"""One HTTP POST with its outcome classified, and the webhook signature.

A delivery either succeeds (2xx), fails in a way worth retrying (`Retryable`: the receiver is
unreachable, slow, busy or broken: no answer, a timeout, 408, 429, 5xx, or anything that is
not a final answer such as a redirect), or is refused for good (`Rejected`: any other 4xx, the
receiver judged the request itself and will judge it the same way again). Redirects are not
followed: a POST redirected becomes a GET without its body, which no receiver wants.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import urllib.error
import urllib.request
from collections.abc import Mapping
from email.message import Message

SIGNATURE_HEADER = "X-Faultline-Signature"
TIMESTAMP_HEADER = "X-Faultline-Timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"

_ANSWER_BYTES = 300  # of a refusal's body, kept for the log


class DeliveryError(Exception):
    """A delivery that did not succeed; `reason` is a metric label, the message says more."""

    reason = "error"

    def __init__(self, message: str, reason: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.retry_after_s = retry_after_s


class Retryable(DeliveryError):
    """Try again later: `reason` is network, timeout or status."""


class Rejected(DeliveryError):
    """The receiver refused this request for good (`reason` rejected)."""


def sign(secret: bytes, timestamp_ms: int, body: bytes) -> str:
    """The X-Faultline-Signature value: `sha256=` and the hex HMAC-SHA256 of `timestamp.body`.

    The timestamp is inside the signed text so that a receiver can refuse an old request
    replayed by someone who captured it (see `verify`)."""
    mac = hmac.new(secret, f"{timestamp_ms}.".encode() + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def verify(
    secret: bytes,
    timestamp: str,
    body: bytes,
    signature: str,
    now_ms: int,
    tolerance_s: float = 300.0,
) -> bool:
    """What a receiver checks: the signature matches, in constant time, and the timestamp is
    within `tolerance_s` of its clock."""
    try:
        ts = int(timestamp)
    except ValueError:
        return False
    if abs(now_ms - ts) > tolerance_s * 1000:
        return False
    return hmac.compare_digest(sign(secret, ts, body), signature)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None  # the 3xx reaches post() as an HTTPError


_OPENER = urllib.request.build_opener(_NoRedirects)


def _retry_after(headers: Message | None) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return max(float(value), 0.0) if value is not None else None
    except ValueError:
        return None  # an HTTP date: the backoff decides instead


def post(url: str, body: bytes, headers: Mapping[str, str], timeout_s: float) -> int:
    """POST `body` as JSON; the 2xx status, else Retryable or Rejected saying why."""
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json", **headers}
    )
    try:
        with _OPENER.open(request, timeout=timeout_s) as reply:
            reply.read()
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        status = exc.code
        answer = exc.read()[:_ANSWER_BYTES].decode(errors="replace").strip()
        message = f"{url} answered {status}: {answer or exc.reason}"
        if 400 <= status < 500 and status not in (408, 429):
            raise Rejected(message, "rejected") from exc
        raise Retryable(message, "status", _retry_after(exc.headers)) from exc
    except TimeoutError as exc:
        raise Retryable(f"{url} did not answer within {timeout_s:g} s", "timeout") from exc
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):
            raise Retryable(f"{url} did not answer within {timeout_s:g} s", "timeout") from exc
        raise Retryable(f"{url} unreachable: {exc.reason}", "network") from exc
    except (OSError, http.client.HTTPException) as exc:  # reset mid-answer, a bad status line
        raise Retryable(f"{url} failed: {exc}", "network") from exc
