"""Why a delivery attempt failed, as the worker's HTTP edge reports it.

DeliveryError            the root; `code` is what the attempt's `error` column records
 +-- TargetBlocked       "blocked_target": the URL names or resolves to a private address;
 |                       permanent, never retried
 +-- RequestTimeout      "timeout": no complete reply within the request timeout
 +-- ConnectFailed       "connect_error": refused, unreachable or the name did not resolve
 +-- TransportFailed     "network_error": any other transport problem (reset, protocol
                         error, invalid URL)

A reply with any status code is not an error here: the caller decides what a 3xx,
4xx or 5xx means.
"""

from __future__ import annotations


class DeliveryError(Exception):
    code: str = "network_error"


class TargetBlocked(DeliveryError):
    code = "blocked_target"


class RequestTimeout(DeliveryError):
    code = "timeout"


class ConnectFailed(DeliveryError):
    code = "connect_error"


class TransportFailed(DeliveryError):
    code = "network_error"


# For Dramatiq's `throws=`: failures that no retry can fix.
PERMANENT: tuple[type[DeliveryError], ...] = (TargetBlocked,)
