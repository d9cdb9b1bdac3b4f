"""C-ECHO as an SCU: the "is the peer there and does it accept us" check."""

from __future__ import annotations

from dataclasses import dataclass

from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]


@dataclass(frozen=True)
class EchoResult:
    ok: bool
    message: str


def echo(calling_ae: str, called_ae: str, host: str, port: int, timeout: float) -> EchoResult:
    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = timeout
    peer = f"{called_ae}@{host}:{port}"
    assoc = ae.associate(host, port, ae_title=called_ae)
    try:
        if assoc.is_rejected:
            rj = assoc.acceptor.primitive
            detail = (
                f" (result {rj.result}, source {rj.result_source}, reason {rj.diagnostic})"
                if rj
                else ""
            )
            return EchoResult(False, f"{peer} rejected the association{detail}")
        if not assoc.is_established:
            return EchoResult(
                False, f"{peer} did not answer: no association within {timeout:.0f} s"
            )
        status = assoc.send_c_echo()
        if status and int(status.Status) == 0:
            return EchoResult(True, f"{peer} answered C-ECHO: success")
        code = f"0x{int(status.Status):04X}" if status else "no response"
        return EchoResult(False, f"{peer} answered C-ECHO with {code}")
    finally:
        if assoc.is_established:
            assoc.release()
        ae.shutdown()
