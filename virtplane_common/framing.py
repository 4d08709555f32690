"""Framing of messages on the guest channel's byte stream.

A frame is a 16-byte header followed by the payload::

    magic (4) | payload length (4) | crc32 of payload (4) | crc32 of the first 12 bytes (4)

all integers big-endian. The header checksum lets a reader reject a corrupt
length at once instead of waiting for bytes that never come; the payload
checksum rejects a corrupt body. After garbage, a partial frame or a
reconnect, the reader drops bytes up to the next valid header and goes on.

This module runs inside guests too: standard library only, Python >= 3.9.
"""

from __future__ import annotations

import struct
import zlib

MAGIC = b"\xf0VPG"
HEADER = struct.Struct(">4sIII")
HEADER_SIZE = HEADER.size
DEFAULT_MAX_PAYLOAD = 256 * 1024


class FrameTooLarge(ValueError):
    """A payload is larger than the channel allows."""


def encode(payload: bytes, max_payload: int = DEFAULT_MAX_PAYLOAD) -> bytes:
    """Returns the frame that carries payload."""
    if len(payload) > max_payload:
        raise FrameTooLarge(f"payload of {len(payload)} bytes exceeds the limit of {max_payload}")
    head = struct.pack(">4sII", MAGIC, len(payload), zlib.crc32(payload))
    return head + struct.pack(">I", zlib.crc32(head)) + payload


class FrameDecoder:
    """Turns a byte stream into payloads, surviving any byte sequence.

    Memory held is bounded by one header plus max_payload bytes.
    """

    def __init__(self, max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        self._max_payload = max_payload
        self._buf = bytearray()
        self.discarded_bytes = 0
        """Bytes dropped so far while resynchronising."""
        self.rejected_bytes = 0
        """Payload bytes checked in vain: frames whose header was sound but whose
        payload failed its checksum. Crafted headers nested in a payload can make
        one byte read cost a whole payload's checksum; a reader that charges
        these bytes to the sender's budget keeps that work bounded."""

    def feed(self, data: bytes) -> list[bytes]:
        """Adds data read from the stream; returns the payloads completed."""
        self._buf += data
        out: list[bytes] = []
        while True:
            payload = self._next()
            if payload is None:
                return out
            out.append(payload)

    def reset(self) -> None:
        """Drops a partial frame, e.g. after the stream reconnected."""
        self.discarded_bytes += len(self._buf)
        self._buf.clear()

    def _drop(self, n: int) -> None:
        del self._buf[:n]
        self.discarded_bytes += n

    def _next(self) -> bytes | None:
        buf = self._buf
        while True:
            start = buf.find(MAGIC)
            if start < 0:
                # Keep a tail that may be the beginning of the magic.
                self._drop(max(0, len(buf) - (len(MAGIC) - 1)))
                return None
            if start:
                self._drop(start)
            if len(buf) < HEADER_SIZE:
                return None
            _, length, payload_crc, header_crc = HEADER.unpack_from(buf)
            if zlib.crc32(bytes(buf[:12])) != header_crc or length > self._max_payload:
                self._drop(1)
                continue
            end = HEADER_SIZE + length
            if len(buf) < end:
                return None
            payload = bytes(buf[HEADER_SIZE:end])
            if zlib.crc32(payload) != payload_crc:
                self.rejected_bytes += length
                self._drop(1)
                continue
            del buf[:end]
            return payload
