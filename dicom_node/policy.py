"""Association policy: who may associate with the node, decided before negotiation."""

from __future__ import annotations

from dataclasses import dataclass

from vlnode.settings import NodeSettings

# A-ASSOCIATE-RJ (result, source, diagnostic), PS3.8 9.3.4
REJECT_CALLING_AE_NOT_RECOGNISED = (0x01, 0x01, 0x03)
REJECT_CALLED_AE_NOT_RECOGNISED = (0x01, 0x01, 0x07)
REJECT_LOCAL_LIMIT_EXCEEDED = (0x02, 0x03, 0x02)


@dataclass(frozen=True)
class Rejection:
    """Why an association is refused, and the A-ASSOCIATE-RJ fields that say so."""

    result: int
    source: int
    diagnostic: int
    reason: str


class AssociationPolicy:
    """Calling-AE allow-list (optionally per host), called-AE check, association limit."""

    def __init__(self, node: NodeSettings) -> None:
        self.ae_title = node.ae_title
        self.require_called = node.require_called_ae_title
        self.max_associations = node.max_associations
        self.allowed = node.allowed_callers

    def decide(
        self, calling_ae: str, called_ae: str, peer_host: str, others_active: int
    ) -> Rejection | None:
        """Return a :class:`Rejection`, or None to accept.

        ``others_active`` counts the node's associations besides the one asking, in every
        listener process.
        """
        calling = calling_ae.strip()
        if self.allowed and not any(
            rule.ae_title == calling and (rule.host is None or rule.host == peer_host)
            for rule in self.allowed
        ):
            return Rejection(
                *REJECT_CALLING_AE_NOT_RECOGNISED,
                reason=f"calling AE title {calling!r} from {peer_host} is not in "
                "node.allowed_callers",
            )
        if self.require_called and called_ae.strip() != self.ae_title:
            return Rejection(
                *REJECT_CALLED_AE_NOT_RECOGNISED,
                reason=f"called AE title {called_ae.strip()!r} is not this node's "
                f"({self.ae_title!r})",
            )
        if others_active >= self.max_associations:
            return Rejection(
                *REJECT_LOCAL_LIMIT_EXCEEDED,
                reason=f"{others_active} associations already active "
                f"(node.max_associations = {self.max_associations})",
            )
        return None
