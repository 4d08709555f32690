"""Framing of messages on the guest channel's byte stream.

A frame is a 16-byte header followed by the payload::

    magic (4) | payload length (4) | crc32 of payload (4) | crc32 of the first 12 bytes (4)

all integers big-endian. The header checksum lets a reader reject a corrupt
length at once instead of waiting for bytes that never come; the payload
checksum rejects a corrupt body. After garbage, a partial frame or a
reconnect, the reader drops bytes up to the next valid header and goes on.

Resynchronising is linear in the bytes fed: the search for the magic looks
at every byte once, and payload checksums are paid from a credit that each
byte consumed earns back (at most two frames' worth ahead). A frame cut short
is followed by the next one as before; crafted headers nested in a payload,
each claiming a payload whose checksum fails, cannot make one byte cost a
whole payload's checksum: once the credit is spent, such headers are taken
for garbage unchecked until the bytes read have paid for the next check.

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
        one byte read cost a whole payload's checksum; the decoder's checksum
        credit keeps all checksum work below the bytes fed plus two frames."""
        self.header_checks = 0
        """Candidate headers checked: at most one per byte fed."""
        self.checked_bytes = 0
        """Payload bytes checksummed, good frames and bad."""
        self.unchecked_frames = 0
        """Headers taken for garbage without checking their payload: the
        checksum credit was spent (see _credit)."""
        self._credit_cap = 2 * (HEADER_SIZE + max_payload)
        self._credit = self._credit_cap
        """Payload bytes that may still be checksummed: each check spends its
        length, each byte consumed (a frame or garbage) earns one back, up
        to the cap. Checksum work thus stays below the cap plus the bytes fed."""

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
        self._earn(n)

    def _earn(self, consumed: int) -> None:
        self._credit = min(self._credit_cap, self._credit + consumed)

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
            self.header_checks += 1
            _, length, payload_crc, header_crc = HEADER.unpack_from(buf)
            if zlib.crc32(bytes(buf[:12])) != header_crc or length > self._max_payload:
                self._drop(1)
                continue
            end = HEADER_SIZE + length
            if len(buf) < end:
                return None
            if length > self._credit:
                # Checksums were spent in vain on more than the bytes read
                # since: this header is taken for garbage, unchecked.
                self.unchecked_frames += 1
                self._drop(1)
                continue
            self._credit -= length
            self.checked_bytes += length
            payload = bytes(buf[HEADER_SIZE:end])
            if zlib.crc32(payload) != payload_crc:
                self.rejected_bytes += length
                self._drop(1)
                continue
            del buf[:end]
            self._earn(end)
            return payload
