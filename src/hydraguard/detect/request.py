"""Request-level features: computed once per request, cheaply, from what the gateway already reads.

They fill the fingerprint slots of the one `RequestEvent` schema (`template_hash`, `template_signature`,
`reasoning_extraction_score`, `capability_area`, `sampling_fingerprint`, `client_fingerprint`; the gateway
itself records `tls_fingerprint`); the gateway's event writer, the simulator and batch analysis all call these
functions.

* Template fingerprint: the text's *skeleton* (numbers, quoted spans, code, URLs, e-mail addresses and named
  slots masked) hashed exactly, plus a MinHash signature of its word 3-shingles, written as LSH band keys, so
  one template filled with different tasks still shares band keys across requests and accounts.
* Reasoning-extraction score and capability area: the reviewed pattern files in `detect/patterns/`.
* Sampling and client fingerprints: hashes of the sampling parameters, and the user agent's family and
  major.minor version.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numba
import numpy as np
import yaml
from ua_parser import parse_user_agent

if TYPE_CHECKING:
    from hydraguard.events.log import PromptContent
    from hydraguard.events.schema import RequestEvent

PATTERNS_DIR = Path(__file__).parent / "patterns"
SAMPLING_FIELDS = (
    "model",
    "stream",
    "temperature",
    "top_p",
    "max_tokens",
    "n",
    "logprobs",
    "top_logprobs",
    "response_format",
    "tools_schema_hash",
)

# MinHash: 16 hash functions, written as 8 LSH bands of 2 rows. Two fillings of one template whose shingle sets
# have Jaccard similarity s share at least one band key with probability 1 - (1 - s^2)^8 (s = 0.3: 54 %).
MINHASH_BANDS = 8
MINHASH_ROWS = 2
MAX_SHINGLE_WORDS = 400  # long prompts: the first 300 and last 100 words (templates frame the task)
_rng = np.random.default_rng(0x6879647261)  # fixed: signatures must agree across processes and releases
_A = _rng.integers(1, 2**63, MINHASH_BANDS * MINHASH_ROWS, dtype=np.uint64) | np.uint64(1)
_B = _rng.integers(0, 2**63, MINHASH_BANDS * MINHASH_ROWS, dtype=np.uint64)
_MIX1, _MIX2, _MIX3 = np.uint64(0x9E3779B1), np.uint64(0x85EBCA77), np.uint64(0x9E3779B97F4A7C15)
_SHIFT = np.uint64(32)

# (cues, pattern, mask): a mask runs only when one of its cues occurs in the text (a cheap `in` test, each a
# substring every match contains); () always runs
_MASKS = (
    (("```",), re.compile(r"```.*?(```|$)", re.S), " <code> "),
    (("`",), re.compile(r"`[^`\n]+`"), " <code> "),
    (("http", "www."), re.compile(r"https?://\S+|www\.\S+"), " <url> "),
    (("@",), re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+"), " <email> "),
    (("{", "[", "<"), re.compile(r"\{\{?\s*\w+\s*\}?\}|\[[A-Z][A-Z_ ]{1,30}\]|<[A-Z][A-Z_]{1,30}>"), " <slot> "),
    (('"', "“", "'"), re.compile(r"\"[^\"\n]{1,200}\"|“[^”\n]{1,200}”|'[^'\n]{2,200}'(?!\w)"), " <q> "),
    ((), re.compile(r"\d+([.,:/]\d+)*"), " <num> "),
)
_WORD = re.compile(r"<\w+>|\w+")


@dataclass(frozen=True, slots=True)
class RequestFeatures:
    template_hash: str
    template_signature: str
    reasoning_extraction_score: float
    capability_area: str


def skeleton(text: str) -> str:
    """The text with its variable parts masked, lower-cased, whitespace collapsed."""
    return " ".join(skeleton_words(text))


def skeleton_words(text: str) -> list[str]:
    """The skeleton's words (`skeleton(text).split()`, without joining and splitting again)."""
    for cues, pattern, mask in _MASKS:
        if not cues or any(cue in text for cue in cues):
            text = pattern.sub(mask, text)
    return _WORD.findall(text.lower())


def _crc32_table() -> np.ndarray:
    """zlib's CRC-32 (reflected polynomial 0xEDB88320), one entry a byte value."""
    table = np.zeros(256, dtype=np.uint64)
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xEDB88320 if crc & 1 else crc >> 1
        table[byte] = crc
    return table


_CRC32 = _crc32_table()


def _band_keys(skeleton_bytes: bytes) -> np.ndarray:
    """MINHASH_BANDS 32-bit LSH band keys of the word 3-shingles (fewer than 3 words: the words themselves) of a
    skeleton given as its UTF-8 bytes (words joined by single spaces)."""
    return _skeleton_band_keys(np.frombuffer(skeleton_bytes, dtype=np.uint8), _A, _B)


# compiled: as numpy expressions this took a dozen calls whose per-call overhead was most of a request's feature
# cost at prompt sizes, and hashing words one by one in Python a few more (docs/benchmarks.md, "Request-level
# features")
@numba.njit(cache=True, nogil=True)
def _skeleton_band_keys(text: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    # each word's CRC-32 (zlib.crc32 of its UTF-8 bytes); an empty skeleton hashes as one empty word
    hashes = np.empty(np.sum(text == 32) + 1, np.uint64)
    word, crc = 0, np.uint64(0xFFFFFFFF)
    for byte in text:
        if byte == 32:
            hashes[word] = crc ^ np.uint64(0xFFFFFFFF)
            word, crc = word + 1, np.uint64(0xFFFFFFFF)
        else:
            crc = _CRC32[(crc ^ np.uint64(byte)) & np.uint64(0xFF)] ^ (crc >> np.uint64(8))
    hashes[word] = crc ^ np.uint64(0xFFFFFFFF)
    if len(hashes) > MAX_SHINGLE_WORDS:  # long prompts: the first 300 and the last 100 words
        hashes = np.concatenate((hashes[:300], hashes[-100:]))
    shingles = hashes
    if len(hashes) >= 3:
        shingles = (hashes[:-2] * _MIX1 + hashes[1:-1]) * _MIX2 + hashes[2:]
    # multiply-shift hashing (wrapping uint64 arithmetic): one universal hash function per element of a; each band
    # is MINHASH_ROWS consecutive functions. The minimum before the shift: x >> 32 never decreases as x grows.
    mins = np.empty(len(a), np.uint64)
    for j in range(len(a)):
        lowest = np.uint64(0xFFFFFFFFFFFFFFFF)
        for value in shingles:
            lowest = min(lowest, value * a[j] + b[j])
        mins[j] = lowest >> _SHIFT
    keys = np.empty(len(a) // MINHASH_ROWS, np.uint64)
    for band in range(len(keys)):
        keys[band] = (mins[MINHASH_ROWS * band] * _MIX3 + mins[MINHASH_ROWS * band + 1]) >> _SHIFT
    return keys


def _fingerprint(skel: str) -> tuple[str, str]:
    encoded = skel.encode()
    digest = hashlib.sha256(encoded).hexdigest()[:16]
    return digest, _band_keys(encoded).astype(">u4").tobytes().hex()  # 8 hex digits a band key


def template_fingerprint(text: str) -> tuple[str, str]:
    """`(template_hash, template_signature)`: 16 hex digits of the skeleton's SHA-256, and the band keys as
    MINHASH_BANDS groups of 8 hex digits."""
    words = skeleton_words(text)
    return _fingerprint(" ".join(words))


def signature_bands(signature: str) -> list[str]:
    """A `template_signature`'s band keys, each prefixed with its band number (band keys only collide within
    one band)."""
    return [f"{i}:{signature[8 * i : 8 * i + 8]}" for i in range(len(signature) // 8)]


@dataclass(frozen=True, slots=True)
class Pattern:
    id: str
    weight: float
    cues: tuple[str, ...]
    regex: re.Pattern[str]
    rationale: str
    source: str
    examples: dict[str, list[str]]


@functools.cache
def reasoning_patterns() -> tuple[Pattern, ...]:
    data = yaml.safe_load((PATTERNS_DIR / "reasoning_extraction.yaml").read_text())
    return tuple(
        Pattern(
            id=p["id"],
            weight=float(p["weight"]),
            cues=tuple(p["cue"].split("|")),
            regex=re.compile(p["pattern"], re.I),
            rationale=p["rationale"],
            source=p["source"],
            examples=p["examples"],
        )
        for p in data["patterns"]
    )


@functools.cache
def _reasoning_cues() -> tuple[tuple[str, int], ...]:
    """Every pattern's cues as (cue, pattern number), one flat tuple: one pass of `in` tests per request."""
    return tuple((cue, i) for i, p in enumerate(reasoning_patterns()) for cue in p.cues)


def reasoning_matches(text: str, lowered: str | None = None) -> list[Pattern]:
    """The reasoning-extraction patterns `text` matches (`lowered`: `text.lower()`, if at hand)."""
    lowered = text.lower() if lowered is None else lowered
    cued = {i for cue, i in _reasoning_cues() if cue in lowered}
    if not cued:
        return []
    return [p for i, p in enumerate(reasoning_patterns()) if i in cued and p.regex.search(text) is not None]


def reasoning_extraction_score(text: str, lowered: str | None = None) -> float:
    """1 - prod(1 - weight) over the reasoning-extraction patterns the text matches (0: none)."""
    keep = 1.0
    for pattern in reasoning_matches(text, lowered):
        keep *= 1.0 - pattern.weight
    return round(1.0 - keep, 4)


@dataclass(frozen=True, slots=True)
class AreaIndex:
    default: str
    areas: tuple[str, ...]
    words: dict[str, tuple[tuple[int, float], ...]]  # word -> (area number, weight) for each area it counts for
    vocabulary: frozenset[str]  # the words' keys, to intersect a text's words with in C
    phrases: tuple[tuple[str, int, float], ...]
    patterns: tuple[tuple[re.Pattern[str], int, float], ...]


@functools.cache
def capability_areas() -> AreaIndex:
    data = yaml.safe_load((PATTERNS_DIR / "capability_areas.yaml").read_text())
    areas = tuple(data["areas"])
    words: dict[str, list[tuple[int, float]]] = {}
    phrases, patterns = [], []
    for i, spec in enumerate(data["areas"].values()):
        for word, weight in spec.get("words", {}).items():
            words.setdefault(word, []).append((i, float(weight)))
        phrases += [(phrase, i, float(weight)) for phrase, weight in spec.get("phrases", {}).items()]
        patterns += [(re.compile(p), i, float(weight)) for p, weight in spec.get("patterns", {}).items()]
    return AreaIndex(
        data["default"],
        areas,
        {w: tuple(v) for w, v in words.items()},
        frozenset(words),
        tuple(phrases),
        tuple(patterns),
    )


def capability_area(text: str, tools_count: int = 0, words: set[str] | None = None, lowered: str | None = None) -> str:
    """The best-scoring area of `capability_areas.yaml`; `words`: the text's skeleton words, `lowered`:
    `text.lower()`, if at hand."""
    if tools_count:
        return "agentic"
    index = capability_areas()
    lowered = text.lower() if lowered is None else lowered
    if words is None:
        words = set(skeleton_words(text))
    scores = [0.0] * len(index.areas)
    for word in words & index.vocabulary:
        for area, weight in index.words[word]:
            scores[area] += weight
    for phrase, area, weight in index.phrases:
        if phrase in lowered:
            scores[area] += weight
    for regex, area, weight in index.patterns:
        if regex.search(lowered):
            scores[area] += weight
    best = max(range(len(scores)), key=scores.__getitem__)
    return index.areas[best] if scores[best] > 0 else index.default


def request_features(system_text: str, user_text: str, tools_count: int = 0) -> RequestFeatures:
    """The content features of one request: its system prompt and its last user turn (earlier turns were
    scored when they were sent)."""
    text = f"{system_text}\n{user_text}" if system_text else user_text
    words = skeleton_words(text)
    template_hash, signature = _fingerprint(" ".join(words))
    lowered = text.lower()
    area = capability_area(text, tools_count, set(words), lowered)
    return RequestFeatures(template_hash, signature, reasoning_extraction_score(text, lowered), area)


def sampling_fingerprint(values: dict[str, Any] | Any) -> str:
    """16 hex digits identifying a request's sampling parameters (`SAMPLING_FIELDS`, from a mapping or any
    object with those attributes: a `RequestEvent`, a `RequestInfo`)."""
    get = values.get if isinstance(values, dict) else functools.partial(getattr, values)
    text = "|".join(repr(get(name, None)) for name in SAMPLING_FIELDS)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


_PRODUCT = re.compile(r"^\s*([A-Za-z][\w.\-/ ]*?)[/ ]v?(\d+)(?:\.(\d+))?")


@functools.lru_cache(maxsize=65_536)
def client_fingerprint(user_agent: str | None) -> str | None:
    """The user agent's client family and major.minor version, e.g. `Chrome/124.0`, `OpenAI/Python/1.40`."""
    if not user_agent:
        return None
    parsed = parse_user_agent(user_agent)
    if parsed is not None and parsed.family != "Other":
        return f"{parsed.family}/{parsed.major or 0}.{parsed.minor or 0}"
    match = _PRODUCT.match(user_agent)
    if match is None:
        return "other"
    family, major, minor = match.groups()
    return f"{family}/{major}.{minor or 0}"


def fill_fingerprints(event: RequestEvent, content: PromptContent | None) -> None:
    """Fill a gateway event's fingerprint slots: the event log's `enrich` hook, run in its writer thread. The
    simulator fills the same slots with the same functions (`sim/prompts.py`, `sim/output.py`)."""
    event.sampling_fingerprint = sampling_fingerprint(event)
    event.client_fingerprint = client_fingerprint(event.user_agent)
    if content is None or not (content.system_text or content.user_text):
        return
    features = request_features(content.system_text, content.user_text, content.tools_count)
    event.template_hash = features.template_hash
    event.template_signature = features.template_signature
    event.reasoning_extraction_score = features.reasoning_extraction_score
    event.capability_area = features.capability_area
