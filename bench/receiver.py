"""The benchmark's receiver: a minimal HTTP/1.1 server on raw asyncio that answers every
POST `200 ok` and records when it arrived, so that the machine's limit is the clients'
and the network stack's, not the receiver's.

Run it as `python -m bench.receiver [--port N]`; it prints `PORT <n>` on its first line
once it listens. Besides any POST it answers three GETs:

- `/count` -> `{"posts": n, "distinct": n}` (distinct `webhook-id`s since the last reset);
- `/dump`  -> `[[receipt_unix_s, webhook_id, survey_id_or_null], ...]`, first receipt of
  each `webhook-id` (the survey id read from `content.id` of the body);
- `/reset` -> forgets everything.

Bodies are kept raw and parsed only by `/dump`, so a POST costs a dict insertion.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any

_OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"
_NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
_HEADER_END = b"\r\n\r\n"
MAX_HEADER_BYTES = 64 * 1024


@dataclass
class Recorder:
    """Every POST since the last reset: first receipt per `webhook-id`, and the total."""

    posts: int = 0
    first: dict[bytes, tuple[float, bytes]] = field(default_factory=dict)

    def record(self, at_s: float, webhook_id: bytes, body: bytes) -> None:
        self.posts += 1
        if webhook_id not in self.first:
            self.first[webhook_id] = (at_s, body)

    def reset(self) -> None:
        self.posts = 0
        self.first = {}

    def count(self) -> dict[str, int]:
        return {"posts": self.posts, "distinct": len(self.first)}

    def dump(self) -> list[list[Any]]:
        return [
            [at_s, webhook_id.decode(errors="replace"), _survey_id(body)]
            for webhook_id, (at_s, body) in self.first.items()
        ]


def _survey_id(body: bytes) -> str | None:
    try:
        content = json.loads(body).get("content")
    except (ValueError, AttributeError):
        return None
    survey_id = content.get("id") if isinstance(content, dict) else None
    return survey_id if isinstance(survey_id, str) else None


@dataclass(frozen=True)
class _Request:
    method: bytes
    path: bytes
    headers: dict[bytes, bytes]
    body: bytes
    size: int


class _Incomplete(Exception):
    """More bytes are needed to finish the request at the head of the buffer."""


class _Malformed(Exception):
    """The client sent something that is not HTTP/1.1 as this server speaks it."""


def _parse(buffer: bytearray) -> _Request:
    """The request at the head of `buffer`; raises `_Incomplete` or `_Malformed`."""
    end = buffer.find(_HEADER_END)
    if end < 0:
        if len(buffer) > MAX_HEADER_BYTES:
            raise _Malformed("header too large")
        raise _Incomplete
    lines = bytes(buffer[:end]).split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3:
        raise _Malformed("bad request line")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    start = end + len(_HEADER_END)
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        body, size = _chunked(buffer, start)
    else:
        length = int(headers.get(b"content-length", b"0"))
        if len(buffer) < start + length:
            raise _Incomplete
        body, size = bytes(buffer[start : start + length]), start + length
    return _Request(parts[0], parts[1], headers, body, size)


def _chunked(buffer: bytearray, position: int) -> tuple[bytes, int]:
    body = bytearray()
    while True:
        line_end = buffer.find(b"\r\n", position)
        if line_end < 0:
            raise _Incomplete
        chunk_size = int(bytes(buffer[position:line_end]).split(b";")[0], 16)
        data_start = line_end + 2
        if chunk_size == 0:
            trailer_end = buffer.find(_HEADER_END, line_end)
            if trailer_end < 0:
                raise _Incomplete
            return bytes(body), trailer_end + len(_HEADER_END)
        if len(buffer) < data_start + chunk_size + 2:
            raise _Incomplete
        body += buffer[data_start : data_start + chunk_size]
        position = data_start + chunk_size + 2


class _Connection(asyncio.Protocol):
    def __init__(self, recorder: Recorder) -> None:
        self._recorder = recorder
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        assert self._transport is not None
        self._buffer += data
        while self._buffer:
            try:
                request = _parse(self._buffer)
            except _Incomplete:
                return
            except (_Malformed, ValueError):
                self._transport.close()
                return
            del self._buffer[: request.size]
            self._transport.write(self._answer(request))
            if request.headers.get(b"connection", b"").lower() == b"close":
                self._transport.close()
                return

    def _answer(self, request: _Request) -> bytes:
        if request.method == b"POST":
            webhook_id = request.headers.get(b"webhook-id", b"")
            self._recorder.record(time.time(), webhook_id, request.body)
            return _OK
        if request.method != b"GET":
            return _NOT_FOUND
        if request.path == b"/count":
            return _json(self._recorder.count())
        if request.path == b"/dump":
            return _json(self._recorder.dump())
        if request.path == b"/reset":
            self._recorder.reset()
            return _json({"reset": True})
        return _NOT_FOUND


def _json(value: Any) -> bytes:
    body = json.dumps(value).encode()
    head = (
        f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def serve(*, host: str, port: int) -> None:
    """Serve until SIGTERM or SIGINT; print `PORT <n>` once listening."""
    loop = asyncio.get_running_loop()
    recorder = Recorder()
    server = await loop.create_server(lambda: _Connection(recorder), host, port, backlog=1024)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    bound = server.sockets[0].getsockname()[1]
    sys.stdout.write(f"PORT {bound}\n")
    sys.stdout.flush()
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.receiver", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(host=args.host, port=args.port))


if __name__ == "__main__":
    main()
