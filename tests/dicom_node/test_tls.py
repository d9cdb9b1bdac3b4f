"""DICOM TLS (PS3.15 B.1): dcmtk's storescu over TLS into the node, client certificates
checked, several listener processes, and the sender delivering to storescp over TLS.

The test makes its own CA and certificates with the ``openssl`` command.
"""

from __future__ import annotations

import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from dicom_node.sender import Sender
from dicom_node.tls import TlsError, client_context, server_context
from store.outputs import DeliveryState
from store.tables import Instance
from tests.conftest import DCMTK_ENV, NodeProcess, free_port, require_tool
from tests.dicom_factory import write_ct_study
from tests.dicom_node import test_sender as sender_tests
from tests.dicom_node.test_listener import count, in_process_node
from vlnode.settings import Destination, DestinationTls, SettingsError, TlsSettings, load_settings

# The sender tests' store with one SR queued for delivery to "pacs".
data_dir = sender_tests.data_dir
engine = sender_tests.engine
queued_output = sender_tests.queued_output


@dataclass(frozen=True)
class Certificates:
    """A test CA, a server and a client certificate it signs, and a client it does not."""

    ca: Path
    server: Path
    server_key: Path
    client: Path
    client_key: Path
    stranger: Path  # a client certificate signed by another CA
    stranger_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def _make_ca(folder: Path, name: str) -> tuple[Path, Path]:
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-keyout", f"{name}.key", "-out", f"{name}.pem", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=folder,
    )  # fmt: skip
    return folder / f"{name}.pem", folder / f"{name}.key"


def _make_leaf(folder: Path, name: str, ca: tuple[Path, Path], usage: str) -> tuple[Path, Path]:
    extensions = folder / f"{name}.ext"
    extensions.write_text(
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
        f"extendedKeyUsage={usage}\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n"
    )
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
        "-out", f"{name}.csr", "-subj", f"/CN={name}",
        cwd=folder,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", str(ca[0]), "-CAkey", str(ca[1]),
        "-CAcreateserial", "-days", "2", "-out", f"{name}.pem", "-extfile", str(extensions),
        cwd=folder,
    )  # fmt: skip
    return folder / f"{name}.pem", folder / f"{name}.key"


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    require_tool("openssl")
    folder = tmp_path_factory.mktemp("tls")
    ca = _make_ca(folder, "vlnode-test-ca")
    other_ca = _make_ca(folder, "other-ca")
    server = _make_leaf(folder, "server", ca, "serverAuth")
    client = _make_leaf(folder, "client", ca, "clientAuth")
    stranger = _make_leaf(folder, "stranger", other_ca, "clientAuth")
    return Certificates(ca[0], *server, *client, *stranger)


def tls_settings(certs: Certificates, port: int, require_client: bool = False) -> TlsSettings:
    return TlsSettings(
        port=port,
        certificate=certs.server,
        private_key=certs.server_key,
        ca_file=certs.ca,
        require_client_certificate=require_client,
    )


def storescu_tls(port: int, files: list[Path], *tls: str) -> subprocess.CompletedProcess[str]:
    tool = require_tool("storescu")
    return subprocess.run(
        [tool, "-aet", "STORESCU", "-aec", "VLNODE", *tls, "127.0.0.1", str(port)]
        + [str(path) for path in files],
        env=DCMTK_ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )


def with_certificate(certs: Certificates, key: Path, certificate: Path) -> tuple[str, ...]:
    return ("+tls", str(key), str(certificate), "+cf", str(certs.ca))


@pytest.mark.peer
def test_storescu_stores_over_tls_beside_the_plain_port(
    certificates: Certificates, tmp_path: Path
) -> None:
    tls_port = free_port()
    node = in_process_node(tmp_path / "vlnode-data", tls=tls_settings(certificates, tls_port))
    node.start()
    try:
        _, files = write_ct_study(tmp_path / "study", (3, 2))
        secure = storescu_tls(
            tls_port,
            files[:3],
            *with_certificate(certificates, certificates.client_key, certificates.client),
        )
        assert secure.returncode == 0, secure.stdout + secure.stderr
        assert count(node, Instance) == 3
        plain = storescu_tls(node.settings.node.port, files[3:])
        assert plain.returncode == 0, plain.stdout + plain.stderr
        assert count(node, Instance) == 5
        # TLS on the plain port is no association: the handshake meets a DICOM listener.
        confused = storescu_tls(
            node.settings.node.port,
            files[:1],
            *with_certificate(certificates, certificates.client_key, certificates.client),
        )
        assert confused.returncode != 0
    finally:
        node.stop()
    stored = sorted((node.settings.store.data_dir / "spool").rglob("*.dcm"))
    assert {dcmread(p).SOPInstanceUID for p in stored} == {dcmread(p).SOPInstanceUID for p in files}


@pytest.mark.peer
def test_client_without_a_trusted_certificate_is_refused(
    certificates: Certificates, tmp_path: Path
) -> None:
    tls_port = free_port()
    node = in_process_node(
        tmp_path / "vlnode-data", tls=tls_settings(certificates, tls_port, require_client=True)
    )
    node.start()
    try:
        _, files = write_ct_study(tmp_path / "study", (1,))
        stranger = storescu_tls(
            tls_port,
            files,
            *with_certificate(certificates, certificates.stranger_key, certificates.stranger),
        )
        anonymous = storescu_tls(tls_port, files, "+tla", "+cf", str(certificates.ca))
        for refused in (stranger, anonymous):
            assert refused.returncode != 0, refused.stdout + refused.stderr
        assert count(node, Instance) == 0
        trusted = storescu_tls(
            tls_port,
            files,
            *with_certificate(certificates, certificates.client_key, certificates.client),
        )
        assert trusted.returncode == 0, trusted.stdout + trusted.stderr
        assert count(node, Instance) == 1
        # The failed handshakes took no association slot and left no open connection behind.
        assert node.listener.active_associations() == 0
    finally:
        node.stop()


@pytest.mark.peer
def test_handshake_in_the_listener_process_that_serves_the_connection(
    certificates: Certificates, node_process: NodeProcess, tmp_path: Path
) -> None:
    tls_port = free_port()
    node_process.env.update(
        VLNODE_NODE__LISTENER_PROCESSES="2",
        VLNODE_NODE__TLS__PORT=str(tls_port),
        VLNODE_NODE__TLS__CERTIFICATE=str(certificates.server),
        VLNODE_NODE__TLS__PRIVATE_KEY=str(certificates.server_key),
        VLNODE_NODE__TLS__CA_FILE=str(certificates.ca),
        VLNODE_NODE__TLS__REQUIRE_CLIENT_CERTIFICATE="true",
    )
    node_process.start()
    time.sleep(3.0)  # the extra process imports its modules
    _, files = write_ct_study(tmp_path / "study", (2,))
    ae = AE(ae_title="HOLDER")
    ae.add_requested_context(CTImageStorage)
    # An association held open on the main process: the next connection goes to the other one.
    held = ae.associate("127.0.0.1", node_process.port, ae_title="VLNODE")
    try:
        assert held.is_established
        secure = storescu_tls(
            tls_port,
            files,
            *with_certificate(certificates, certificates.client_key, certificates.client),
        )
        assert secure.returncode == 0, secure.stdout + secure.stderr + node_process.log()[-3000:]
    finally:
        held.release()
        ae.shutdown()
    served_by = re.findall(
        r"INFO (\S+) dicom_node\.server: association \d+ from STORESCU@", node_process.log()
    )
    assert served_by == ["listener-1"], node_process.log()[-3000:]
    assert "2 stored" in node_process.log()
    assert node_process.stop() == 0


def tls_destination(port: int, ca: Path, certs: Certificates) -> Destination:
    return Destination(
        name="pacs",
        ae_title="DEST",
        host="127.0.0.1",
        port=port,
        tls=DestinationTls(ca_file=ca, certificate=certs.client, private_key=certs.client_key),
    )


def start_storescp_tls(port: int, folder: Path, certs: Certificates) -> subprocess.Popen[bytes]:
    tool = require_tool("storescp")
    folder.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [
            tool, "-aet", "DEST", "-od", str(folder), "+xa",
            "+tls", str(certs.server_key), str(certs.server), "+cf", str(certs.ca), "-rc",
            str(port),
        ],
        env=DCMTK_ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


@pytest.mark.peer
def test_sender_delivers_over_tls_to_storescp(
    certificates: Certificates, engine: Any, data_dir: Path, tmp_path: Path, queued_output: str
) -> None:
    port = free_port()
    received = tmp_path / "received"
    process = start_storescp_tls(port, received, certificates)
    try:
        sender_tests.wait_listening(port)
        base = sender_tests.settings_for(data_dir, port)
        # Trusting another CA, the destination's certificate is refused: not delivered.
        distrustful = base.model_copy(
            update={"destinations": (tls_destination(port, certificates.stranger, certificates),)}
        )
        assert Sender(distrustful, engine, "sender").run_once() is True
        line = sender_tests.only_delivery(engine)
        assert line.state == DeliveryState.PENDING
        assert line.last_error is not None and "over TLS" in line.last_error
        assert not received.exists() or not any(received.iterdir())
        trusting = base.model_copy(
            update={"destinations": (tls_destination(port, certificates.ca, certificates),)}
        )
        sender = Sender(trusting, engine, "sender")
        sender_tests.run_until(sender, engine, lambda d: d.state == DeliveryState.DELIVERED)
    finally:
        sender_tests.stop(process)
    (stored,) = received.iterdir()
    assert dcmread(stored).SOPInstanceUID == queued_output


def test_settings_name_the_unusable_tls_file(certificates: Certificates, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.pem"
    with pytest.raises(TlsError, match=r"node\.tls\.certificate .*nowhere\.pem.* does not exist"):
        server_context(missing, certificates.server_key, None, False)
    with pytest.raises(TlsError, match=r"cannot be used together"):
        server_context(certificates.server, certificates.client_key, None, False)
    with pytest.raises(TlsError, match=r"require_client_certificate is true but .*ca_file"):
        server_context(certificates.server, certificates.server_key, None, True)
    with pytest.raises(TlsError, match=r"ca_file .* holds no PEM CA"):
        client_context(certificates.server_key, None, None, True)
    with pytest.raises(TlsError, match=r"both certificate and private_key"):
        client_context(None, certificates.client, None, True)
    config = tmp_path / "site.toml"
    config.write_text(
        f'[node.tls]\nport = 2762\ncertificate = "{certificates.server}"\n'
        f'private_key = "{missing}"\n'
    )
    with pytest.raises(SettingsError, match=r"node\.tls\.private_key .*nowhere\.pem"):
        load_settings(config)
    config.write_text("[node]\nport = 2762\n[node.tls]\nport = 2762\n" + _files(certificates))
    with pytest.raises(SettingsError, match=r"node\.tls\.port 2762 is node\.port too"):
        load_settings(config)
    config.write_text("[node.tls]\nplain_port = false\n")
    with pytest.raises(SettingsError, match=r"plain_port = false needs a TLS port"):
        load_settings(config)


def _files(certs: Certificates) -> str:
    return f'certificate = "{certs.server}"\nprivate_key = "{certs.server_key}"\n'
