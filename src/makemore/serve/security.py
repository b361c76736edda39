"""What the server lets in and out, as ASGI middleware around the application: security headers
on every response (nothing loaded from elsewhere, no framing), and a Host check that turns away
DNS rebinding when the server listens on the loopback interface.
"""

from __future__ import annotations


class SecurityHeaders:
    """Every response: no scripts, styles, fonts or connections but the server's own (the page
    works offline and cannot be made to load anything else), no framing, no MIME sniffing."""

    HEADERS = [
        (b"content-security-policy", b"default-src 'self'; img-src 'self' data:; object-src 'none'; "
                                     b"base-uri 'none'; frame-ancestors 'none'; form-action 'self'"),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
    ]

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *self.HEADERS]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class HostCheck:
    """Refuse a Host header that is not this server's name. A server on 127.0.0.1 is reachable
    from any web page the user opens through DNS rebinding (a hostile name that resolves to
    127.0.0.1); such requests carry the hostile name in Host, so they are turned away here."""

    def __init__(self, app, allowed: list[str]):
        self.app, self.allowed = app, {h.lower() for h in allowed}

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            host = dict(scope["headers"]).get(b"host", b"").decode("latin-1").lower()
            name = host[1:host.find("]")] if host.startswith("[") else host.rsplit(":", 1)[0]
            if name not in self.allowed:
                from starlette.responses import JSONResponse

                response = JSONResponse({"error": f"Host {host[:100]!r} is not this server's name"}, status_code=421)
                return await response(scope, receive, send)
        await self.app(scope, receive, send)


LOOPBACK_NAMES = ["127.0.0.1", "localhost", "::1"]


def allowed_hosts_for(host: str) -> list[str] | None:
    """Host names a browser may use to reach a server bound to `host`; None (any) when it is
    bound beyond the loopback interface, where the user picks the name."""
    if host in LOOPBACK_NAMES or host.startswith("127."):
        return sorted({*LOOPBACK_NAMES, host})
    return None
