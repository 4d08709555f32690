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


def _crafted(size: int) -> bytes:
    """A header at every 16 bytes, each claiming a payload up to the end whose
    checksum fails: a decoder re-checking nested headers costs size**2 / 32."""
    out = bytearray()
    count = size // HEADER_SIZE
    for i in range(count):
        length = (count - i - 1) * HEADER_SIZE
        head = struct.pack(">4sII", MAGIC, length, 1)  # no payload has this checksum
        out += head + struct.pack(">I", zlib.crc32(head))
    return bytes(out)


CREDIT = 2 * (HEADER_SIZE + DEFAULT_MAX_PAYLOAD)


@pytest.mark.parametrize("size", [64 * 1024, DEFAULT_MAX_PAYLOAD])
def test_resync_after_a_crafted_frame_is_linear(size: int) -> None:
    decoder = FrameDecoder()
    crafted = _crafted(size)
    decoder.feed(crafted)
    # Each byte starts at most one header check, and checksum work stays under
    # the bytes fed plus the decoder's credit: no byte costs a payload's
    # checksum (re-checking every nested header would cost size**2 / 32).
    assert decoder.header_checks <= len(crafted)
    assert decoder.checked_bytes <= len(crafted) + CREDIT
    assert decoder.checked_bytes < size * size // 32 // 8


def test_resync_work_grows_linearly_with_the_crafted_size() -> None:
    sizes = [DEFAULT_MAX_PAYLOAD * k for k in (1, 4, 16)]
    work = []
    for size in sizes:
        decoder = FrameDecoder()
        decoder.feed(_crafted(size))
        work.append(decoder.checked_bytes - CREDIT)
    # Beyond the credit, the work per byte fed is bounded by one.
    for size, spent in zip(sizes, work, strict=True):
        assert spent <= size


def test_a_good_frame_after_a_crafted_frame_comes_through() -> None:
    decoder = FrameDecoder()
    crafted = _crafted(64 * 1024)
    assert decoder.feed(crafted + b"\x00" * 64 * 1024 + encode(b"after")) == [b"after"]


def test_crafted_frame_fed_byte_by_byte_still_resyncs() -> None:
    decoder = FrameDecoder()
    stream = _crafted(4096) + encode(b"after")
    out = [p for i in range(len(stream)) for p in decoder.feed(stream[i : i + 1])]
    assert out == [b"after"]


def test_frames_cut_short_one_after_another_then_a_good_one() -> None:
    first = encode(b"a" * 100)[:-60]
    second = encode(b"b" * 100)[:-60]
    decoder = FrameDecoder()
    later = encode(b"n" * 64)
    assert decoder.feed(first + second + encode(b"good") + later) == [b"good", b"n" * 64]
