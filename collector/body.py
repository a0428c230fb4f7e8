"""Reading a request body within a size limit, including gzip bodies (and gzip bombs)."""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator

GZIP_MAGIC = b"\x1f\x8b"


class PayloadTooLarge(ValueError):
    pass


class BadEncoding(ValueError):
    pass


async def read_limited(chunks: AsyncIterator[bytes], limit: int) -> bytes:
    """The whole body, refused as soon as it passes `limit` bytes (chunked bodies too)."""
    buf = bytearray()
    async for chunk in chunks:
        buf += chunk
        if len(buf) > limit:
            raise PayloadTooLarge(f"body larger than {limit} bytes")
    return bytes(buf)


def decode(raw: bytes, content_encoding: str | None, limit: int) -> bytes:
    """Undo Content-Encoding; the limit applies to the decompressed size too.

    gzip: every member of a multi-member stream is decoded (RFC 1952 allows several, and
    `cat a.gz b.gz` makes one); a stream cut short or followed by bytes that are not another
    member is refused, never silently shortened.
    """
    encoding = (content_encoding or "identity").strip().lower()
    if encoding in ("identity", ""):
        return raw
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise BadEncoding(f"unsupported Content-Encoding {content_encoding!r}; use gzip")
    out = bytearray()
    rest = raw
    member = 0
    while True:
        member += 1
        # wbits 32+15 accepts gzip and zlib headers alike.
        inflater = zlib.decompressobj(32 + zlib.MAX_WBITS)
        try:
            out += inflater.decompress(rest, limit + 1 - len(out))
        except zlib.error as exc:
            raise BadEncoding(f"body is not valid {encoding} (member {member}): {exc}") from None
        if len(out) > limit or inflater.unconsumed_tail:
            raise PayloadTooLarge(f"decompressed body larger than {limit} bytes")
        if not inflater.eof:
            raise BadEncoding(f"{encoding} body is truncated (member {member} has no end)")
        rest = inflater.unused_data
        if not rest:
            return bytes(out)
        if not rest.startswith(GZIP_MAGIC):
            raise BadEncoding(
                f"{len(rest)} bytes of trailing data after {encoding} member {member}"
            )
