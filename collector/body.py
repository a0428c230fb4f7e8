"""Reading a request body within a size limit, including gzip bodies (and gzip bombs)."""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator


class PayloadTooLarge(ValueError):
    pass


class BadEncoding(ValueError):
    pass


async def read_limited(chunks: AsyncIterator[bytes], limit: int) -> bytes:
    buf = bytearray()
    async for chunk in chunks:
        buf += chunk
        if len(buf) > limit:
            raise PayloadTooLarge(f"body larger than {limit} bytes")
    return bytes(buf)


def decode(raw: bytes, content_encoding: str | None, limit: int) -> bytes:
    """Undo Content-Encoding; the limit applies to the decompressed size too."""
    encoding = (content_encoding or "identity").strip().lower()
    if encoding in ("identity", ""):
        return raw
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise BadEncoding(f"unsupported Content-Encoding {content_encoding!r}; use gzip")
    # wbits 32+15 accepts gzip and zlib headers alike.
    inflater = zlib.decompressobj(32 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(raw, limit + 1)
    except zlib.error as exc:
        raise BadEncoding(f"body is not valid {encoding}: {exc}") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise PayloadTooLarge(f"decompressed body larger than {limit} bytes")
    return out
