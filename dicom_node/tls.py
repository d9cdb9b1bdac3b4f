"""DICOM over TLS (PS3.15 B.1, the BCP 195 profiles): the listener's and the sender's contexts.

The listener's handshake runs in the thread that serves the connection, in the listener
process that serves it: with several listener processes (dicom_node.dispatch) the main
process hands the raw TCP connection over, and a TLS session cannot follow a descriptor into
another process. A peer that never completes its handshake holds its own thread only, for
``node.tls.handshake_timeout`` at most; the accepting thread is never blocked.

Every certificate and key is read when the context is made: a missing file, a key that does
not belong to its certificate or a file that is no PEM raises :class:`TlsError`, naming the
configuration key and what to do.
"""

from __future__ import annotations

import logging
import socket
import ssl
from pathlib import Path

log = logging.getLogger(__name__)

# PS3.15 B.9 (BCP 195): TLS 1.2 or later; Python's default ciphers are the BCP 195 ones.
MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2


class TlsError(ValueError):
    """A certificate, key or CA file of the configuration cannot be used; says which."""


def server_context(
    certificate: Path,
    private_key: Path,
    ca_file: Path | None,
    require_client_certificate: bool,
    key: str = "node.tls",
) -> ssl.SSLContext:
    """The listener's context: our certificate, and the CAs whose client certificates we trust.

    With ``require_client_certificate`` a peer without a certificate signed by ``ca_file``
    fails the handshake; without it a certificate is checked when the peer offers one.
    ``key`` names the configuration section in errors.
    """
    if require_client_certificate and ca_file is None:
        raise TlsError(
            f"{key}.require_client_certificate is true but {key}.ca_file is not set: give the "
            "CA file that signs the client certificates"
        )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MINIMUM_VERSION
    _load_chain(context, certificate, private_key, key)
    if ca_file is not None:
        _load_ca(context, ca_file, key)
        context.verify_mode = ssl.CERT_REQUIRED if require_client_certificate else ssl.CERT_OPTIONAL
    return context


def client_context(
    ca_file: Path | None,
    certificate: Path | None,
    private_key: Path | None,
    check_hostname: bool,
    key: str = "destinations.tls",
) -> ssl.SSLContext:
    """The sender's context: the CAs we trust for the destination, and our own certificate.

    Without ``ca_file`` the system's CAs are trusted. The destination's certificate is always
    verified; ``check_hostname`` also checks that it names the host we connect to.
    """
    if (certificate is None) != (private_key is None):
        raise TlsError(f"{key}: give both certificate and private_key, or neither")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = MINIMUM_VERSION
    context.check_hostname = check_hostname
    context.verify_mode = ssl.CERT_REQUIRED
    if ca_file is None:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    else:
        _load_ca(context, ca_file, key)
    if certificate is not None and private_key is not None:
        _load_chain(context, certificate, private_key, key)
    return context


def accept_handshake(
    context: ssl.SSLContext, connection: socket.socket, timeout: float
) -> ssl.SSLSocket | None:
    """Run the server side of the handshake on an accepted connection.

    Returns the TLS socket, blocking as accepted sockets are, or None when the handshake
    failed or timed out (logged with the peer's address, and the connection closed).
    """
    try:
        peer = connection.getpeername()
    except OSError:
        peer = ("?", 0)
    try:
        connection.settimeout(timeout)
        secure = context.wrap_socket(connection, server_side=True)
        secure.settimeout(None)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        log.warning("TLS handshake with %s:%s failed: %s", peer[0], peer[1], _reason(exc))
        connection.close()
        return None
    return secure


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).lower().replace("_", " ")
    if isinstance(exc, TimeoutError | socket.timeout):
        return "no handshake within the time allowed (node.tls.handshake_timeout)"
    return str(exc) or type(exc).__name__


def _load_chain(context: ssl.SSLContext, certificate: Path, private_key: Path, key: str) -> None:
    _require_file(certificate, f"{key}.certificate")
    _require_file(private_key, f"{key}.private_key")
    try:
        context.load_cert_chain(certfile=str(certificate), keyfile=str(private_key))
    except ssl.SSLError as exc:
        raise TlsError(
            f"{key}.certificate {str(certificate)!r} and {key}.private_key {str(private_key)!r} "
            f"cannot be used together ({_reason(exc)}): give a PEM certificate and the "
            "unencrypted PEM key that belongs to it"
        ) from None


def _load_ca(context: ssl.SSLContext, ca_file: Path, key: str) -> None:
    _require_file(ca_file, f"{key}.ca_file")
    try:
        context.load_verify_locations(cafile=str(ca_file))
    except ssl.SSLError as exc:
        raise TlsError(
            f"{key}.ca_file {str(ca_file)!r} holds no PEM CA certificate ({_reason(exc)})"
        ) from None


def _require_file(path: Path, key: str) -> None:
    if not path.is_file():
        raise TlsError(f"{key} {str(path)!r} does not exist or is not a file")
