"""Length bounds on what hostd keeps or dials from a request: request ids,
peer addresses and host ids. The servicer checks them before any work;
everything else in a request is hostd.validation's."""

from __future__ import annotations

from virtplane_common.errors import InvalidArgument

# As the controller's (controller.requests.MAX_REQUEST_ID).
MAX_REQUEST_ID = 128
# host:port with a DNS name of at most 253 characters.
MAX_ADDRESS = 260
MAX_HOST_ID = 64


def _bounded(field: str, value: str, limit: int) -> str:
    if len(value) > limit:
        raise InvalidArgument(field, f"must be at most {limit} characters, got {len(value)}")
    if not value.isprintable():
        raise InvalidArgument(field, "must be printable text")
    return value


def request_id(value: str) -> str:
    return _bounded("request_id", value, MAX_REQUEST_ID)


def address(field: str, value: str) -> str:
    return _bounded(field, value, MAX_ADDRESS)


def host_id(field: str, value: str) -> str:
    return _bounded(field, value, MAX_HOST_ID)
