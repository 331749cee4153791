"""One logged-in SIP2 connection to one library's system, and the exchange rules on it.

``Sip2Connection.open`` connects (TCP, or TLS where the library offers it), logs in (93/94)
when the library has a login user, and asks SC status (99/98), which must say the ACS is
online. ``exchange`` sends one message with the next ``AY`` sequence number and its ``AZ``
checksum, and verifies the answer's checksum and sequence number:

- the answer's checksum does not add up (or it has none): ask the ACS to resend (97) once,
  then give up with ``ChecksumMismatch``;
- the ACS asks us to resend (96, it got our line damaged): send the same line once more.

A connection that failed in any way is closed, never reused; ``SessionRefused`` says the ACS
refused the login or is offline. Nothing here logs or raises the patron's identifier.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import ssl

from adapters.sip2 import codec, messages
from adapters.sip2.settings import Library

MAX_LINE_BYTES = 16 * 1024
_RESEND_REQUEST, _RESEND_ASKED = "97", "96"


class SessionRefused(Exception):
    """The ACS refused our login, or says it is offline."""


class Sip2Connection:
    """A logged-in connection; one exchange at a time (the pool guarantees it)."""

    def __init__(
        self, library: Library, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._library = library
        self._reader = reader
        self._writer = writer
        self._sequence = itertools.cycle(range(10))
        self.acs_status: codec.Message | None = None

    @classmethod
    async def open(cls, library: Library) -> Sip2Connection:
        """Connect, log in and check the ACS is online (the caller bounds the time)."""
        site = library.settings
        reader, writer = await asyncio.open_connection(
            site.host, site.port, ssl=_tls(library), limit=MAX_LINE_BYTES
        )
        connection = cls(library, reader, writer)
        try:
            if site.login_user is not None:
                answer = await connection.exchange(
                    messages.login(site.login_user, library.password, site.location), "94"
                )
                _require(messages.login_accepted(answer), "login refused")
            await connection.check()
        except BaseException:
            await connection.close()
            raise
        return connection

    async def check(self) -> None:
        """SC status (99/98): the health check; ``SessionRefused`` when the ACS is offline."""
        status = await self.exchange(messages.sc_status(), "98")
        if status.fixed["online_status"] != "Y":
            raise SessionRefused("the ACS is offline")
        self.acs_status = status

    def supports(self, position: int) -> bool:
        return self.acs_status is None or messages.supports(self.acs_status, position)

    async def exchange(self, request: codec.Message, expect: str) -> codec.Message:
        """Send ``request``; the verified answer, which must be command ``expect``."""
        sequence = next(self._sequence)
        line = codec.encode(request, sequence=sequence, encoding=self._encoding)
        await self._send(line)
        decoded = await self._answer()
        if decoded is not None and decoded.message.command == _RESEND_ASKED:
            await self._send(line)  # the ACS got our line damaged: once more
            decoded = await self._answer()
        if decoded is None or decoded.message.command == _RESEND_ASKED:
            raise codec.ChecksumMismatch("no intact answer after one resend")
        if decoded.message.command != expect:
            raise codec.MalformedMessage(f"expected a {expect}, got {decoded.message.command}")
        if decoded.sequence is not None and decoded.sequence != sequence:
            raise codec.MalformedMessage("the answer's AY sequence number is not ours")
        return decoded.message

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):  # reset by the other side: closed
            await self._writer.wait_closed()

    @property
    def _encoding(self) -> str:
        return self._library.settings.encoding

    async def _answer(self) -> codec.Decoded | None:
        """The next intact answer, asking once for a resend (97) if it was damaged."""
        for attempt in range(2):
            line = await self._read_line()
            try:
                return codec.decode(line, encoding=self._encoding)
            except (codec.ChecksumMismatch, codec.MissingChecksum):
                if attempt == 0:
                    await self._send(
                        codec.encode(messages.acs_resend(), sequence=0, encoding="ascii")
                    )
        return None

    async def _send(self, line: bytes) -> None:
        self._writer.write(line + self._library.terminator)
        await self._writer.drain()

    async def _read_line(self) -> bytes:
        terminator = self._library.terminator[-1:]  # CR, or the LF of CRLF
        try:
            line = await self._reader.readuntil(terminator)
        except asyncio.LimitOverrunError:
            raise codec.MalformedMessage(f"an answer longer than {MAX_LINE_BYTES} bytes") from None
        # Tolerate the other convention: a CRLF server to a CR client leaves an LF in front.
        return line.rstrip(b"\r\n").lstrip(b"\n")


def _require(condition: bool, refusal: str) -> None:
    if not condition:
        raise SessionRefused(refusal)


def _tls(library: Library) -> ssl.SSLContext | None:
    site = library.settings
    if not site.tls:
        return None
    context = ssl.create_default_context(
        cafile=str(site.ca_file) if site.ca_file is not None else None
    )
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context
