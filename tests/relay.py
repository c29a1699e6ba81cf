"""A TCP relay to a server on 127.0.0.1 that a test can cut, as an unreachable host looks to its clients."""

from __future__ import annotations

import contextlib
import socket
import threading


class Relay:
    """Relays connections to 127.0.0.1:`target_port` from 127.0.0.1:`port`.

    Cut, it closes every connection it is handed at once, and with `open_too` those
    already relayed as well (a database host gone: the pool's connections break too).
    """

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.up = True
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self, open_too: bool = False) -> None:
        self.up = False
        if open_too:
            with self._lock:
                for s in self._open:
                    with contextlib.suppress(OSError):
                        s.shutdown(socket.SHUT_RDWR)

    def mend(self) -> None:
        self.up = True

    def close(self) -> None:
        self.cut(open_too=True)
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.up:
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
                with self._lock:
                    self._open.discard(s)
