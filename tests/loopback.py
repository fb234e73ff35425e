"""Loopback servers for tests: the start/stop plumbing every test server shares (the Slack doubles too), an HTTP
service with a chosen status, and one that never answers."""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class LoopbackServer:
    """A server on 127.0.0.1, served by a daemon thread from start() to stop() (both idempotent; also a context
    manager). A subclass makes the server: anything with serve_forever(), shutdown() and a listening `socket`."""

    _server = None
    _thread: threading.Thread | None = None

    def _make_server(self):
        raise NotImplementedError

    def start(self):
        if self._server is None:
            self._server = self._make_server()
            self._thread = threading.Thread(target=self._server.serve_forever, name=type(self).__name__, daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        if hasattr(self._server, "server_close"):  # socketserver's servers keep their socket open after shutdown()
            self._server.server_close()
        self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return self._server.socket.getsockname()[1]


class StatusServer(LoopbackServer):
    """Answers every GET with `status` (changeable while running), after `delay` seconds."""

    def __init__(self, status: int = 200, delay: float = 0.0):
        self.status = status
        self.delay = delay
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                time.sleep(outer.delay)
                body = b"ok\n" if outer.status < 400 else b"error\n"
                self.send_response(outer.status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self._handler = Handler

    def _make_server(self):
        return ThreadingHTTPServer(("127.0.0.1", 0), self._handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class SilentServer:
    """Accepts connections and never says a word: a hung service."""

    def __init__(self):
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def port(self) -> int:
        return self._listener.getsockname()[1]

    @property
    def accepted(self) -> int:
        """Connections accepted so far: one per request a client started."""
        return len(self._accepted)

    def _accept(self):
        self._listener.settimeout(0.1)
        while not self._stop.is_set():
            try:
                connection, _ = self._listener.accept()
                self._accepted.append(connection)
            except (TimeoutError, OSError):
                continue

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        for connection in self._accepted:
            connection.close()
        self._listener.close()


_HELD: list[socket.socket] = []


def closed_port() -> int:
    """A loopback port nobody listens on, for as long as the test process lives: a socket keeps it bound without
    listening, so a connection to it is refused. A port that was only bound and closed again could be taken in the
    meantime, by a server or by a client's own connect as its source port (a fresh-clone CI run saw the TCP probe of
    such a port succeed)."""
    held = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    held.bind(("127.0.0.1", 0))
    _HELD.append(held)
    return held.getsockname()[1]


class HookServer(LoopbackServer):
    """Takes every POST with 200 "ok": `received`, its bodies; `requests`, each as "POST /path" (an absolute URL when
    it was sent to it as a proxy)."""

    def __init__(self):
        self.received: list[bytes] = []
        self.requests: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                outer.requests.append(f"{self.command} {self.path}")
                outer.received.append(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self._handler = Handler

    def _make_server(self):
        return ThreadingHTTPServer(("127.0.0.1", 0), self._handler)


class TlsHookServer(HookServer):
    """An HTTPS response_url on 127.0.0.1 with a certificate of its own (self-signed, made with the openssl command
    in `directory`). `certificate` is the file a client must trust."""

    def __init__(self, directory):
        import subprocess
        from pathlib import Path

        super().__init__()
        self.certificate, self._key = Path(directory) / "hook-cert.pem", Path(directory) / "hook-key.pem"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
             "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(self._key), "-out", str(self.certificate)],
            check=True, capture_output=True,
        )

    def _make_server(self):
        import ssl

        server = super()._make_server()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.certificate, self._key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        return server

    def url(self, name: str) -> str:
        return f"https://127.0.0.1:{self.port}/hooks/{name}"
