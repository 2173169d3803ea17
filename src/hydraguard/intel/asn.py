"""The IP-to-ASN table: which autonomous system announces which networks, from a CSV of `cidr,asn` rows."""

from __future__ import annotations

import csv
import io
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from hydraguard.intel.indicators import IndicatorError, IndicatorKind, normalize


class AsnTableError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class AsnNetwork:
    version: int
    first: int  # first and last address as integers
    last: int
    asn: int


class AsnTable:
    """Networks and their ASNs. Where networks nest, the most specific one names the ASN (as in routing)."""

    def __init__(self, networks: list[AsnNetwork]) -> None:
        self.networks = networks

    @classmethod
    def from_csv(cls, path: str | Path) -> AsnTable:
        return cls.from_text(Path(path).read_text(encoding="utf-8"), name=str(path))

    @classmethod
    def from_text(cls, text: str, *, name: str = "<asn table>") -> AsnTable:
        networks = []
        for line_no, row in enumerate(csv.reader(io.StringIO(text)), start=1):
            if not row or row[0].startswith("#") or (line_no == 1 and row[0].strip().lower() == "cidr"):
                continue
            if len(row) < 2:
                raise AsnTableError(f"{name}:{line_no}: expected `cidr,asn`, got {','.join(row)!r}")
            try:
                net = ipaddress.ip_network(row[0].strip(), strict=True)
                asn = int(normalize(IndicatorKind.ASN, row[1]).removeprefix("AS"))
            except (ValueError, IndicatorError) as exc:
                raise AsnTableError(f"{name}:{line_no}: {exc}") from None
            first = int(net.network_address)
            networks.append(AsnNetwork(net.version, first, first + net.num_addresses - 1, asn))
        return cls(networks)

    def __len__(self) -> int:
        return len(self.networks)
