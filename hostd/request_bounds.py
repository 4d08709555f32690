"""Length bounds on what hostd keeps or dials from a request: request ids,
peer addresses and host ids. The servicer checks them before any work;
everything else in a request is hostd.validation's."""

from __future__ import annotations

from virtplane_common.validation import check_printable

# As the controller's (controller.requests.MAX_REQUEST_ID).
MAX_REQUEST_ID = 128
# host:port with a DNS name of at most 253 characters.
MAX_ADDRESS = 260
MAX_HOST_ID = 64


def request_id(value: str) -> str:
    return check_printable("request_id", value, MAX_REQUEST_ID)


def address(field: str, value: str) -> str:
    return check_printable(field, value, MAX_ADDRESS)


def host_id(field: str, value: str) -> str:
    return check_printable(field, value, MAX_HOST_ID)
