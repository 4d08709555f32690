"""Request ids: what makes every mutation of the API idempotent.

A mutation carried out under a client's request_id is remembered with it
(table api_requests), in the same transaction as the mutation's first
write: a repeat finds the key and returns the first result instead of
acting again, also after a controller restart. Two concurrent calls with
one key: the second INSERT of the key waits for the first transaction and
then fails on the primary key; the transaction is run again
(db.session.Database), and now finds the key. The same key with a different request (another method,
or other fields) fails with ALREADY_EXISTS.

A call that fails leaves no key behind (its transaction rolls back, or the
service forgets the key), so the same request can be tried again.

The services take a key through claimed() (inside a unit of work) or
run_once() (a unit of work of its own); the VM verbs through
controller.lifecycle.runner.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from google.protobuf.message import Message
from sqlalchemy.orm import Session

from controller.auth import caller
from db.models import ApiRequest
from db.session import Database
from virtplane_common.errors import AlreadyExists, InvalidArgument

T = TypeVar("T")
R = TypeVar("R")
M = TypeVar("M", bound=Message)

MAX_REQUEST_ID = 128


@dataclass(frozen=True)
class Call:
    """One mutation as the API received it: the method, the client's
    idempotency key when it gave one, and the principal that asked for it
    (empty when the controller serves without authentication). call_of()
    takes the principal from controller.auth.caller, where the interceptor
    put it for the call's task; from there the Call carries it explicitly."""

    method: str
    request_id: str = ""
    fingerprint: str = ""
    principal: str = ""


def call_of(method: str, request: Message) -> Call:
    """The Call of request; raises InvalidArgument for a bad request_id."""
    request_id: str = getattr(request, "request_id", "")
    principal = caller.name()
    if not request_id:
        return Call(method, principal=principal)
    if len(request_id) > MAX_REQUEST_ID or not request_id.isprintable():
        raise InvalidArgument(
            "request_id", f"must be at most {MAX_REQUEST_ID} printable characters"
        )
    bare = type(request)()
    bare.CopyFrom(request)
    bare.ClearField("request_id")
    digest = hashlib.sha256(method.encode() + b"\0" + bare.SerializeToString(deterministic=True))
    return Call(method, request_id, digest.hexdigest(), principal)


class RequestIdReused(AlreadyExists):
    def __init__(self, request_id: str, method: str) -> None:
        super().__init__(
            f"request_id {request_id!r} was already used for a different {method} request;"
            " a new request needs a new request_id"
        )


@dataclass(frozen=True)
class StoredAnswer:
    """The answer a first call gave, as its request id keeps it: what a
    repeat of the call answers, unchanged. The services hand it up as it is;
    only the servicer reads it (controller.convert), into its method's
    message."""

    response: bytes

    def decode(self, cls: type[M]) -> M:
        message = cls()
        message.ParseFromString(self.response)
        return message


@dataclass(frozen=True)
class Prior:
    """What the first call with this key produced."""

    result_id: str
    response: bytes | None

    def answer(self) -> StoredAnswer:
        """The answer the first call gave (empty if it stored none)."""
        return StoredAnswer(self.response or b"")


def claim(session: Session, call: Call) -> Prior | None:
    """Takes call's key in the caller's transaction: None when the call is
    new (the key is now held), else what the first call produced. Call it
    before the unit of work's first lock or write."""
    if not call.request_id:
        return None
    row = session.get(ApiRequest, call.request_id)
    if row is not None:
        if (row.method, row.fingerprint) != (call.method, call.fingerprint):
            raise RequestIdReused(call.request_id, row.method)
        return Prior(row.result_id, row.response)
    session.add(
        ApiRequest(
            request_id=call.request_id,
            method=call.method,
            fingerprint=call.fingerprint,
            result_id="",
        )
    )
    session.flush()  # the INSERT now: a concurrent holder of the key makes it wait here
    return None


def lookup(session: Session, call: Call) -> Prior | None:
    """What a first call with call's key produced, without taking the key
    (for a call that must ask a host before its first write)."""
    if not call.request_id:
        return None
    row = session.get(ApiRequest, call.request_id)
    if row is None:
        return None
    if (row.method, row.fingerprint) != (call.method, call.fingerprint):
        raise RequestIdReused(call.request_id, row.method)
    return Prior(row.result_id, row.response)


def remember(session: Session, call: Call, result_id: str, response: Message | None = None) -> None:
    """Records what the call produced, for its repeats."""
    if not call.request_id:
        return
    row = session.get(ApiRequest, call.request_id)
    if row is None:
        return
    row.result_id = result_id
    row.response = response.SerializeToString(deterministic=True) if response else None


def forget(session: Session, call: Call) -> None:
    """Releases the key of a call that failed after its first transaction,
    so that the same request can be tried again."""
    if not call.request_id:
        return
    row = session.get(ApiRequest, call.request_id)
    if row is not None:
        session.delete(row)


@dataclass(frozen=True)
class Done(Generic[R]):
    """What a first call did: its value for the caller, the id of what it
    made or changed, and the response its repeats decode (if any)."""

    value: R
    result_id: str
    response: Message | None = None


def claimed(
    session: Session,
    call: Call,
    work: Callable[[Session], Done[R]],
    replay: Callable[[Session, Prior], R],
) -> R:
    """work(session) under call's key, in the caller's transaction: a repeat
    of call gets replay(session, prior) instead of acting again."""
    prior = claim(session, call)
    if prior is not None:
        return replay(session, prior)
    done = work(session)
    remember(session, call, done.result_id, done.response)
    return done.value


async def run_once(
    db: Database,
    call: Call,
    work: Callable[[Session], Done[R]],
    replay: Callable[[Session, Prior], R],
) -> R:
    """claimed() in a transaction of its own (run again by db.run when a
    concurrent call with the same key won the race)."""
    return await db.run(lambda s: claimed(s, call, work, replay))
