"""Real receivers for alerts: aiosmtpd on loopback (optionally STARTTLS + AUTH), and a local
HTTP server that takes webhook POSTs. No mocks: the product speaks SMTP and HTTP to them.

Import the fixtures into a test module (``from notify_servers import smtp_server, ...``).
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import ipaddress
import json
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from servers import http_serving

from emberkeep.demo.mongoserver import free_port

USER, PASSWORD = "alerts@example.com", "s3cret-Pa55word"


@dataclass
class Mail:
    sender: str
    recipients: list[str]
    subject: str
    body: str
    auth: str | None  # the authenticated login, if any
    tls: bool


@dataclass
class SmtpServer:
    port: int
    messages: list[Mail] = field(default_factory=list)
    cafile: Path | None = None

    def url(self, *, auth: bool = False, password: str = PASSWORD) -> str:
        if self.cafile is None:
            return f"smtp://127.0.0.1:{self.port}"
        user = f"{USER.replace('@', '%40')}:{password}@" if auth else ""
        return f"smtp://{user}127.0.0.1:{self.port}?starttls=true&cafile={self.cafile}"

    def take(self) -> list[Mail]:
        taken, self.messages[:] = list(self.messages), []
        return taken


class _Collect:
    def __init__(self, server: SmtpServer) -> None:
        self.server = server

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        body = parsed.get_body(preferencelist=("plain",))
        self.server.messages.append(
            Mail(
                envelope.mail_from,
                list(envelope.rcpt_tos),
                str(parsed["Subject"]),
                body.get_content() if body is not None else "",
                session.auth_data.decode() if isinstance(session.auth_data, bytes) else None,
                session.ssl is not None,
            )
        )
        return "250 OK"


def _authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
    if isinstance(data, LoginPassword) and (data.login, data.password) == (
        USER.encode(),
        PASSWORD.encode(),
    ):
        return AuthResult(success=True, auth_data=data.login)
    return AuthResult(success=False, handled=False)


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (and localhost), and its key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "smtp-cert.pem", folder / "smtp-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def start_smtp(folder: Path | None = None) -> tuple[SmtpServer, Controller]:
    """Plain SMTP; with ``folder``: STARTTLS required, AUTH LOGIN/PLAIN required after it."""
    server = SmtpServer(free_port())
    options: dict[str, Any] = {}
    if folder is not None:
        cert, key = self_signed(folder)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        server.cafile = cert
        options = {
            "tls_context": context,
            "require_starttls": True,
            "authenticator": _authenticate,
            "auth_required": True,
            "auth_require_tls": True,
        }
    controller = Controller(_Collect(server), hostname="127.0.0.1", port=server.port, **options)
    controller.start()
    return server, controller


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    server, controller = start_smtp()
    yield server
    controller.stop()


@pytest.fixture
def smtp_tls_server(tmp_path: Path) -> Iterator[SmtpServer]:
    server, controller = start_smtp(tmp_path)
    yield server
    controller.stop()


@dataclass
class WebhookReceiver:
    port: int
    posts: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200  # what it answers

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/T0SECRET/B0SECRET"

    def take(self) -> list[dict[str, Any]]:
        taken, self.posts[:] = list(self.posts), []
        return taken


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver(0)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length))
            body["_path"] = self.path
            body["_content_type"] = self.headers.get("Content-Type")
            receiver.posts.append(body)
            self.send_response(receiver.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    with http_serving(Handler) as receiver.port:
        yield receiver


def notify_toml(
    *,
    smtp: str | None = None,
    webhooks: list[str] | None = None,
    rate_limit: str = "6h",
    on_success: bool = False,
    timeout: str = "5s",
) -> str:
    lines = ["[notify]"]
    if smtp:
        lines.append(
            f'email = {{ url = "{smtp}", from = "backup@example.com", '
            'to = ["admin@example.com", "ops@example.com"] }'
        )
    lines.append(f"webhooks = {json.dumps(webhooks or [])}")
    lines.append(f'rate_limit = "{rate_limit}"')
    lines.append(f"on_success = {'true' if on_success else 'false'}")
    lines.append(f'timeout = "{timeout}"')
    return "\n".join(lines) + "\n"
