"""Running the application: a listening socket, uvicorn serving the App on it (in this thread
or a background one), and `makemore serve` itself.
"""

from __future__ import annotations

import socket
import sys
import threading

from ..errors import UserError
from .app import App, create_app


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: a free one), so the URL printed is the real one
    and a client may connect as soon as it is printed."""
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(1024)
    except (OSError, UnicodeError) as e:
        raise UserError(f"cannot listen on {host}:{port}: {getattr(e, 'strerror', None) or e}") from None
    sock.setblocking(False)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def serve(runs: list[str], host: str = "127.0.0.1", port: int = 8000, use: str = "result") -> None:
    """`makemore serve`: load the runs, listen, print the URL, serve until Ctrl-C."""
    from ..runtime import set_threads

    # One torch thread per request instead of several per operation: on small batches the
    # intra-op threads cost more in synchronisation than they save, and concurrent requests
    # already keep the cores busy.
    set_threads(1)
    app = create_app(runs, use=use, host=host)
    server = Server(app, bind(host, port))
    print(f"makemore serve: {len(app.models)} run(s) ({', '.join(app.models)}) at {server.url}", flush=True)
    print("press Ctrl-C to stop", file=sys.stderr, flush=True)
    try:
        server.run()
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it shut down on: the normal way to stop
        pass
    print("makemore serve: stopped", file=sys.stderr)


class Server:
    """uvicorn serving an App on a bound socket, in this thread (run) or a background one (start)."""

    def __init__(self, app: App, sock: socket.socket):
        import uvicorn

        self.app, self.sock, self.url = app, sock, url_of(sock)
        config = uvicorn.Config(app.asgi, log_level="warning", access_log=False, lifespan="off",
                                timeout_graceful_shutdown=3, server_header=False)
        self.server = uvicorn.Server(config)
        self.thread: threading.Thread | None = None

    def run(self) -> None:
        self.server.run(sockets=[self.sock])

    def start(self) -> "Server":
        self.thread = threading.Thread(target=self.run, name="makemore-serve", daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout=10)
        self.sock.close()
