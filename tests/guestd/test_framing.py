from __future__ import annotations

import struct
import zlib

import pytest

from virtplane_common.framing import (
    DEFAULT_MAX_PAYLOAD,
    HEADER_SIZE,
    MAGIC,
    FrameDecoder,
    FrameTooLarge,
    encode,
)

PAYLOADS = [b"", b"a", b"hello world", bytes(range(256)) * 40, MAGIC * 3]


def test_round_trip():
    for payload in PAYLOADS:
        assert FrameDecoder().feed(encode(payload)) == [payload]


def test_many_frames_in_one_feed():
    stream = b"".join(encode(p) for p in PAYLOADS)
    assert FrameDecoder().feed(stream) == PAYLOADS


def test_byte_by_byte():
    decoder = FrameDecoder()
    out: list[bytes] = []
    for byte in b"".join(encode(p) for p in PAYLOADS):
        out += decoder.feed(bytes([byte]))
    assert out == PAYLOADS
    assert decoder.discarded_bytes == 0


def test_garbage_before_and_between_frames():
    stream = b"junk\x00\xff" + encode(b"one") + MAGIC[:2] + b"noise" + MAGIC + encode(b"two")
    decoder = FrameDecoder()
    assert decoder.feed(stream) == [b"one", b"two"]
    assert decoder.discarded_bytes > 0


def test_truncated_frame_then_good_frame():
    truncated = encode(b"this frame is cut short")[:-5]
    decoder = FrameDecoder()
    assert decoder.feed(truncated + encode(b"good")) == [b"good"]


def test_corrupted_payload_byte_drops_only_that_frame():
    bad = bytearray(encode(b"payload to corrupt"))
    bad[HEADER_SIZE + 3] ^= 0x40
    decoder = FrameDecoder()
    assert decoder.feed(bytes(bad) + encode(b"next")) == [b"next"]
    assert decoder.discarded_bytes >= len(bad)


def test_header_claiming_huge_length_is_skipped_at_once():
    head = struct.pack(">4sII", MAGIC, 0xFFFFFFF0, 0)
    huge = head + struct.pack(">I", zlib.crc32(head))
    decoder = FrameDecoder()
    # The good frame comes out without waiting for 4 GiB that will never arrive.
    assert decoder.feed(huge + encode(b"after")) == [b"after"]


def test_header_with_bad_checksum_is_skipped():
    head = struct.pack(">4sII", MAGIC, 10, 0) + b"\x00\x00\x00\x00"
    assert FrameDecoder().feed(head + encode(b"x")) == [b"x"]


def test_oversize_encode_raises():
    with pytest.raises(FrameTooLarge):
        encode(b"x" * (DEFAULT_MAX_PAYLOAD + 1))
    with pytest.raises(FrameTooLarge):
        encode(b"12345", max_payload=4)
    assert FrameDecoder().feed(encode(b"x" * DEFAULT_MAX_PAYLOAD)) == [b"x" * DEFAULT_MAX_PAYLOAD]


def test_decoder_limit_rejects_larger_frames():
    decoder = FrameDecoder(max_payload=4)
    assert decoder.feed(encode(b"12345") + encode(b"1234")) == [b"1234"]


def test_discarded_bytes_accounting():
    decoder = FrameDecoder()
    assert decoder.feed(b"0123456789") == []
    # All but a possible start of the magic is dropped at once.
    assert decoder.discarded_bytes == 10 - (len(MAGIC) - 1)
    assert decoder.feed(encode(b"ok")) == [b"ok"]
    assert decoder.discarded_bytes == 10
    partial = encode(b"partial")[:8]
    decoder.feed(partial)
    decoder.reset()
    assert decoder.discarded_bytes == 18
    assert decoder.feed(encode(b"fresh")) == [b"fresh"]
