"""Hostile HTTP for tests and the abuse bench: bodies sent by hand, so the server's early answer is seen.

An HTTP client sends the whole body before it reads an answer; a server that
refuses a body while it arrives answers (and closes) mid-upload.  These send
chunk by chunk over a raw socket and stop as soon as the server has said
something, counting what they got to send.
"""

from __future__ import annotations

import select
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Pushed:
    status: int
    """The HTTP status the server answered with; 0 when it closed without one."""
    sent: int
    """Body bytes sent before the server answered (or the body's size when it never did early)."""
    answer: bytes


def push(
    url: str,
    path: str,
    chunks: Iterator[bytes],
    headers: dict[str, str] | None = None,
    *,
    chunked: bool = True,
    length: int | None = None,
    timeout: float = 60.0,
) -> Pushed:
    """POST `chunks` to `url+path` (chunked, or with a declared `length`), stopping when the server answers."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout=timeout)
    head = [f"POST {path} HTTP/1.1", f"Host: {parts.netloc}", "Connection: close"]
    head += [f"{k}: {v}" for k, v in (headers or {}).items()]
    head.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {length}")
    sent = 0
    answered = False
    try:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        for chunk in chunks:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                answered = True
                break
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
            except (BrokenPipeError, ConnectionResetError):
                answered = True
                break
            sent += len(chunk)
        if not answered and chunked:
            sock.sendall(b"0\r\n\r\n")
        answer = _read_all(sock)
    finally:
        sock.close()
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else 0
    return Pushed(status, sent, answer)


def _read_all(sock: socket.socket) -> bytes:
    out = b""
    while True:
        try:
            data = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not data:
            break
        out += data
    return out


def repeat(chunk: bytes, total: int) -> Iterator[bytes]:
    """`total` bytes as pieces of `chunk`."""
    left = total
    while left > 0:
        piece = chunk[:left]
        left -= len(piece)
        yield piece


def nested(depth: int) -> bytes:
    """A JSON object with a list nested `depth` deep inside it."""
    return b'{"a": ' + b"[" * depth + b"]" * depth + b"}"
