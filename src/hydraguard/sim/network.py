"""A deterministic model of the internet the simulated clients come from.

Every request leaves through an *endpoint*: a kind and an id within the kind.

* residential: a household line of an ISP; its IP changes every lease (dynamic addressing);
* corporate: one of an org's few NAT egress addresses, shared by everyone in the company;
* campus: one of a campus NAT pool's addresses, shared by all its students;
* mobile: an address from a carrier's CGNAT pool, shared by many unrelated subscribers, new per session;
* cloud: a virtual machine's fixed address (automation, batch jobs, servers, datacenter proxies).

Commercial residential proxy networks are household lines too: with `shared_with_legit` a campaign's exits
are lines that legitimate accounts also use, so an IP alone cannot tell them apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KINDS = ("residential", "corporate", "campus", "mobile", "cloud")
RESIDENTIAL, CORPORATE, CAMPUS, MOBILE, CLOUD = range(5)
CGNAT_POOL = 4096  # addresses per mobile carrier
CAMPUS_POOL = 48  # NAT addresses per campus
EGRESS_MAX = 4  # NAT addresses per company
_STRIDE = 1 << 20  # ids within a kind are `group * _STRIDE + member` for pooled kinds

# first octets used for the simulated address plan (public unicast, away from special-purpose ranges)
_FIRST_OCTETS = np.array([o for o in range(24, 96) if o not in (27, 39, 56, 77)], dtype=np.uint32)


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer: a well-spread 64-bit hash of integers, vectorized."""
    z = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


class Internet:
    def __init__(self, seed: int) -> None:
        rng = np.random.default_rng([seed, 5])
        slash16 = rng.choice(len(_FIRST_OCTETS) * 256, size=400, replace=False)
        bases = (_FIRST_OCTETS[slash16 // 256] << np.uint32(24)) | (slash16 % 256).astype(np.uint32) << np.uint32(16)
        # /16 blocks per kind: residential ISPs, business ISPs (company NAT), universities, carriers, clouds
        self.residential_blocks = bases[:200]
        self.corporate_blocks = bases[200:260]
        self.campus_blocks = bases[260:300]
        self.mobile_blocks = bases[300:340]
        self.cloud_blocks = bases[340:400]
        self.salt = np.uint64(rng.integers(2**63))
        self._lines = 0
        self._hosts = 0
        self.legit_lines: list[np.ndarray] = []
        self.legit_hosts: list[np.ndarray] = []

    # -- allocation -----------------------------------------------------------------------------------
    def new_lines(self, count: int) -> np.ndarray:
        first, self._lines = self._lines, self._lines + count
        return np.arange(first, self._lines, dtype=np.int64)

    def new_hosts(self, count: int) -> np.ndarray:
        first, self._hosts = self._hosts, self._hosts + count
        return np.arange(first, self._hosts, dtype=np.int64)

    # -- addresses ----------------------------------------------------------------------------------------
    def _hash(self, *parts: np.ndarray) -> np.ndarray:
        h = np.full(len(parts[0]), self.salt, dtype=np.uint64)
        for part in parts:
            h = mix64(h ^ part.astype(np.uint64))
        return h

    def _in_blocks(self, blocks: np.ndarray, h: np.ndarray) -> np.ndarray:
        block = blocks[(h % np.uint64(len(blocks))).astype(np.int64)]
        host = ((h >> np.uint64(20)) % np.uint64(65_534) + np.uint64(1)).astype(np.uint32)
        return block | host

    def addresses(self, kind: np.ndarray, ident: np.ndarray, when: np.ndarray, lease_days: float) -> np.ndarray:
        """IPv4 addresses (uint32) of endpoints at the given times."""
        out = np.empty(len(kind), dtype=np.uint32)
        for k in range(len(KINDS)):
            mask = kind == k
            if not mask.any():
                continue
            ids = ident[mask]
            if k == RESIDENTIAL:
                phase = (mix64(ids) % np.uint64(1000)).astype(np.float64) / 1000.0
                lease = np.floor(when[mask] / (lease_days * 86_400.0) + phase).astype(np.int64)
                out[mask] = self._in_blocks(self.residential_blocks, self._hash(ids, lease, np.zeros_like(ids)))
            elif k == CLOUD:
                out[mask] = self._in_blocks(self.cloud_blocks, self._hash(ids, np.full_like(ids, 4)))
            else:
                blocks = {CORPORATE: self.corporate_blocks, CAMPUS: self.campus_blocks, MOBILE: self.mobile_blocks}[k]
                group, member = np.divmod(ids, _STRIDE)
                base = self._in_blocks(blocks, self._hash(group, np.full_like(group, k))) & np.uint32(0xFFFFF000)
                out[mask] = base + (member % 4096).astype(np.uint32)
        return out


@dataclass
class Endpoints:
    """Per account or per exit: endpoint kind, base id and pool size (members are drawn per session)."""

    kind: np.ndarray
    base: np.ndarray
    pool: np.ndarray

    def pick(self, rng: np.random.Generator, which: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        kind = self.kind[which]
        member = np.floor(rng.random(len(which)) * self.pool[which]).astype(np.int64)
        return kind, self.base[which] + member


def pooled(group: np.ndarray, member: np.ndarray) -> np.ndarray:
    """The id of a pooled endpoint: member `member` of NAT pool `group`."""
    return group.astype(np.int64) * _STRIDE + member


def to_strings(addresses: np.ndarray) -> list[str]:
    octets = [(addresses >> np.uint32(s)) & np.uint32(255) for s in (24, 16, 8, 0)]
    return [f"{a}.{b}.{c}.{d}" for a, b, c, d in zip(*(o.tolist() for o in octets), strict=True)]
