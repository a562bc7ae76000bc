"""EHC QR code text (电子健康卡二维码): static codes and dynamic (time-limited) codes.

Text formats (fields separated by ``:``, every character in the QR alphanumeric set, so a
code fits a small QR version; hex is uppercase):

Static code (静态码), shown with a PIN or SMS code as the second factor::

    EHCID:S1:<EHC ID>:<region>:<issuer>:<check>

  EHC ID   32/64/96/128 hex characters
  region   6 digits, GB/T 2260 administrative division code of the issuing region
  issuer   1-20 of [0-9A-Z], the issuing organisation's code (e.g. unified social credit code)
  check    8 hex: CRC-32 of the text before ``:<check>`` (catches misreads; not a MAC)

Dynamic code (动态码), valid for ``window_seconds`` after it is made::

    EHCID:D1:<EHC ID>:<key id>:<validity>:<check>

  key id   1-8 of [0-9A-Z], names the QR protection key (so keys can rotate)
  validity 32 hex: SM4-ECB(protection key, time) where time is YYYYMMDDHHMMSS Beijing time
           (UTC+08:00) read as 14 hex digits (7 bytes) and zero-padded to 16 bytes
  check    16 hex: HMAC-SM3(MAC key, text before ``:<check>``) truncated to 8 bytes, with
           MAC key = SM4-ECB(protection key, "HR-QR-MAC-KEY-01"); binds the validity to the
           EHC ID so a validity field cannot be moved to another card.
"""

from __future__ import annotations

import calendar
import hmac as std_hmac
import re
import threading
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from functools import lru_cache
from typing import Any, Literal, Protocol

from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from healthroam.cards.ehc_id import check_ehc_id
from healthroam.errors import InvalidInput

PREFIX = "EHCID:"
STATIC_VERSION = "S1"
DYNAMIC_VERSION = "D1"
BEIJING = timezone(timedelta(hours=8), "CST")
_BEIJING_OFFSET = 8 * 3600
_MAC_KEY_LABEL = b"HR-QR-MAC-KEY-01"
_MAX_TEXT = 400

_DYNAMIC = re.compile(
    r"EHCID:D1:((?:[0-9A-F]{32}){1,4}):([0-9A-Z]{1,8}):([0-9A-F]{32}):([0-9A-F]{16})"
)
_STATIC = re.compile(r"EHCID:S1:((?:[0-9A-F]{32}){1,4}):([0-9]{6}):([0-9A-Z]{1,20}):([0-9A-F]{8})")
_HEX_UPPER = re.compile(r"[0-9A-F]*")
_KEY_ID = re.compile(r"[0-9A-Z]{1,8}")
_REGION = re.compile(r"[0-9]{6}")
_ISSUER = re.compile(r"[0-9A-Z]{1,20}")


class QrCodeRejected(InvalidInput):
    """QR text was refused. ``reason``: too-long, bad-prefix, bad-version, bad-field-count,
    bad-ehc-id, bad-key-id, bad-region, bad-issuer, bad-length, non-hex, bad-check,
    unknown-key-id, bad-validity, expired, from-future, replayed."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail, expression="qrCode")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class StaticCode:
    """A static EHC QR code (静态码)."""

    ehc_id: str
    region: str
    issuer: str

    def text(self) -> str:
        check_ehc_id(self.ehc_id)
        if not _REGION.fullmatch(self.region):
            raise InvalidInput("region must be a 6-digit GB/T 2260 code", expression="region")
        if not _ISSUER.fullmatch(self.issuer):
            raise InvalidInput("issuer must be 1-20 of [0-9A-Z]", expression="issuer")
        body = f"{PREFIX}{STATIC_VERSION}:{self.ehc_id}:{self.region}:{self.issuer}"
        return f"{body}:{zlib.crc32(body.encode('ascii')):08X}"


@dataclass(frozen=True, slots=True)
class DynamicCode:
    """A verified dynamic EHC QR code (动态码); ``generated_at`` is epoch seconds."""

    ehc_id: str
    key_id: str
    generated_at: int
    text: str


def _reject(reason: str, detail: str) -> QrCodeRejected:
    return QrCodeRejected(reason, detail)


def _diagnose(text: object, version: str, shapes: tuple[tuple[str, str, Any, int], ...]) -> None:
    """Explain why ``text`` failed the fast pattern; always raises."""
    if not isinstance(text, str):
        raise _reject("bad-prefix", "QR text must be text")
    if len(text) > _MAX_TEXT:
        raise _reject("too-long", f"QR text is longer than {_MAX_TEXT} characters")
    if not text.startswith(PREFIX):
        raise _reject("bad-prefix", f"QR text must start with {PREFIX}")
    fields = text[len(PREFIX) :].split(":")
    if fields[0] != version:
        raise _reject("bad-version", f"QR text version must be {version}")
    if len(fields) != len(shapes) + 1:
        raise _reject(
            "bad-field-count", f"QR text must have {len(shapes) + 1} fields after the prefix"
        )
    for value, (name, reason, pattern, _) in zip(fields[1:], shapes, strict=True):
        if not pattern.fullmatch(value):
            raise _reject(reason, f"{name} field is malformed")
    raise _reject("bad-field-count", "QR text is malformed")  # pragma: no cover


def _check_hex(name: str, length: int) -> tuple[str, str, Any, int]:
    return (name, "bad-length", _FixedHex(length), length)


class _FixedHex:
    """A 'pattern' giving distinct reasons for a wrong length and for non-hex characters."""

    def __init__(self, length: int) -> None:
        self.length = length

    def fullmatch(self, value: str) -> bool:
        if len(value) != self.length:
            raise _reject("bad-length", f"a field must be {self.length} hex characters")
        if not _HEX_UPPER.fullmatch(value):
            raise _reject("non-hex", "a field contains a character that is not uppercase hex")
        return True


class _EhcIdField:
    def fullmatch(self, value: str) -> bool:
        try:
            check_ehc_id(value)
        except InvalidInput as exc:
            reason = "non-hex" if "hex" in exc.detail and len(value) % 32 == 0 else "bad-length"
            raise _reject(reason, f"EHC ID field: {exc.detail}") from None
        return True


_STATIC_SHAPES = (
    ("EHC ID", "bad-ehc-id", _EhcIdField(), 0),
    ("region", "bad-region", _REGION, 6),
    ("issuer", "bad-issuer", _ISSUER, 0),
    _check_hex("check", 8),
)
_DYNAMIC_SHAPES = (
    ("EHC ID", "bad-ehc-id", _EhcIdField(), 0),
    ("key id", "bad-key-id", _KEY_ID, 0),
    _check_hex("validity", 32),
    _check_hex("check", 16),
)


def parse_static_code(text: str) -> StaticCode:
    """Parse and check a static code, or raise :class:`QrCodeRejected`."""
    m = _STATIC.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        _diagnose(text, STATIC_VERSION, _STATIC_SHAPES)
        raise AssertionError  # pragma: no cover
    body = text[: m.start(4) - 1]
    if int(m.group(4), 16) != zlib.crc32(body.encode("ascii")):
        raise _reject("bad-check", "static code check value does not match")
    return StaticCode(m.group(1), m.group(2), m.group(3))


# --- dynamic codes ------------------------------------------------------------------------------


def _time_block(epoch_seconds: int) -> bytes:
    t = datetime.fromtimestamp(epoch_seconds, BEIJING)
    return bytes.fromhex(t.strftime("%Y%m%d%H%M%S")) + bytes(9)


@lru_cache(maxsize=4096)
def _day_start(year: int, month: int, day: int) -> int:
    """Epoch seconds of 00:00 Beijing time on that day (raises ValueError for a bad date)."""
    return calendar.timegm((year, month, day, 0, 0, 0)) - _BEIJING_OFFSET


class _ProtectionKey:
    """Cipher and MAC contexts built once per key; ECB contexts are reusable block by block."""

    __slots__ = ("decryptor", "encryptor", "mac")

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes) or len(key) != 16:
            raise InvalidInput("QR protection key must be 16 bytes", expression="keys")
        cipher = Cipher(algorithms.SM4(key), modes.ECB())  # noqa: S305 (scheme mandates ECB)
        self.encryptor = cipher.encryptor()
        self.decryptor = cipher.decryptor()
        mac_key = self.encryptor.update(_MAC_KEY_LABEL)
        self.mac = hmac.HMAC(mac_key, hashes.SM3())

    def check(self, body: bytes) -> str:
        h = self.mac.copy()
        h.update(body)
        return h.finalize()[:8].hex().upper()


def make_dynamic_code(ehc_id: str, key_id: str, key: bytes, at: float | datetime) -> str:
    """The dynamic QR text for ``ehc_id`` made at ``at`` (whole seconds)."""
    check_ehc_id(ehc_id)
    if not isinstance(key_id, str) or not _KEY_ID.fullmatch(key_id):
        raise InvalidInput("key id must be 1-8 of [0-9A-Z]", expression="keyId")
    seconds = int(at.timestamp() if isinstance(at, datetime) else at)
    pk = _ProtectionKey(key)
    validity = pk.encryptor.update(_time_block(seconds)).hex().upper()
    body = f"{PREFIX}{DYNAMIC_VERSION}:{ehc_id}:{key_id}:{validity}"
    return f"{body}:{pk.check(body.encode('ascii'))}"


class ReplayStore(Protocol):
    """Remembers codes already accepted until they expire (a Redis ``SET NX EX`` fits)."""

    def add_if_absent(self, key: str, expires_at: float, now: float) -> bool:
        """Record ``key`` until ``expires_at``; False if it is already recorded and live."""
        ...


class InMemoryReplayStore:
    """A bounded TTL set for one process. Entries are dropped once their code has expired;
    when full, the oldest entry goes (``evicted_live`` counts live ones lost that way, so size
    ``max_entries`` above peak codes-per-second x window)."""

    def __init__(self, max_entries: int = 1_000_000) -> None:
        if max_entries < 1:
            raise InvalidInput("max_entries must be positive", expression="max_entries")
        self.max_entries = max_entries
        self.evicted_live = 0
        self._entries: dict[str, float] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def add_if_absent(self, key: str, expires_at: float, now: float) -> bool:
        entries = self._entries
        with self._lock:
            seen = entries.get(key)
            if seen is not None and seen > now:
                return False
            # Entries arrive roughly in expiry order, so expired ones sit at the front.
            while entries:
                first = next(iter(entries))
                if entries[first] > now and len(entries) < self.max_entries:
                    break
                if entries.pop(first) > now:
                    self.evicted_live += 1
            entries[key] = expires_at
            return True


class DynamicCodeVerifier:
    """Checks dynamic codes: format, key id, check value, validity time, replay.

    ``keys`` maps key id to 16-byte protection key; ``clock`` returns epoch seconds.
    A code made at ``t`` is accepted while ``t <= now + clock_skew`` and
    ``now - t <= window_seconds``, and only once (replays raise ``replayed``).
    """

    def __init__(
        self,
        keys: Mapping[str, bytes],
        window_seconds: int = 60,
        clock: Callable[[], float] = time.time,
        *,
        clock_skew_seconds: int = 5,
        replay_store: ReplayStore | None = None,
    ) -> None:
        if window_seconds <= 0 or clock_skew_seconds < 0:
            raise InvalidInput("window must be positive and skew >= 0", expression="window")
        for key_id in keys:
            if not _KEY_ID.fullmatch(key_id):
                raise InvalidInput("key id must be 1-8 of [0-9A-Z]", expression="keys")
        self._keys = {key_id: _ProtectionKey(key) for key_id, key in keys.items()}
        self.window_seconds = window_seconds
        self.clock_skew_seconds = clock_skew_seconds
        self.clock = clock
        self.replay_store: ReplayStore = replay_store or InMemoryReplayStore()

    def verify(self, text: str) -> DynamicCode:
        """The checked code, or :class:`QrCodeRejected` with a precise ``reason``."""
        code = self.check(text)
        now = self.clock()
        if not self.replay_store.add_if_absent(text, self.expires_at(code), now):
            raise _reject("replayed", "dynamic code was already used")
        return code

    def expires_at(self, code: DynamicCode) -> int:
        """Epoch seconds after which ``code`` is refused as expired."""
        return code.generated_at + self.window_seconds

    def check(self, text: str) -> DynamicCode:
        """Everything :meth:`verify` checks except replay: for callers that record the code
        as used themselves (the card service does it in the transaction that logs the use)."""
        m = _DYNAMIC.fullmatch(text) if type(text) is str else None
        if m is None:
            _diagnose(text, DYNAMIC_VERSION, _DYNAMIC_SHAPES)
            raise AssertionError  # pragma: no cover
        ehc_id, key_id, validity, check = m.groups()
        pk = self._keys.get(key_id)
        if pk is None:
            raise _reject("unknown-key-id", "QR protection key id is unknown")
        body = text[: m.start(4) - 1].encode("ascii")
        if not std_hmac.compare_digest(pk.check(body), check):
            raise _reject("bad-check", "dynamic code check value does not match")
        generated_at = self._decode_time(pk.decryptor.update(bytes.fromhex(validity)))
        now = self.clock()
        if generated_at > now + self.clock_skew_seconds:
            raise _reject("from-future", "dynamic code is dated in the future")
        if now > generated_at + self.window_seconds:
            raise _reject("expired", "dynamic code has expired")
        return DynamicCode(ehc_id, key_id, generated_at, text)

    @staticmethod
    def _decode_time(block: bytes) -> int:
        digits = block[:7].hex()
        if block[7:] != bytes(9) or not digits.isdigit():
            raise _reject("bad-validity", "validity information does not decrypt to a time")
        hour, minute, sec = int(digits[8:10]), int(digits[10:12]), int(digits[12:14])
        if hour > 23 or minute > 59 or sec > 59:
            raise _reject("bad-validity", "validity information is not a valid time")
        try:
            day = _day_start(int(digits[0:4]), int(digits[4:6]), int(digits[6:8]))
        except ValueError:
            raise _reject("bad-validity", "validity information is not a valid date") from None
        return day + hour * 3600 + minute * 60 + sec


def render_qr(text: str, kind: Literal["png", "svg"] = "svg", scale: int = 4) -> bytes:
    """A QR image of ``text`` at error-correction level M (PNG or SVG bytes)."""
    import io

    import segno

    qr = segno.make(text, error="m", boost_error=False)
    buffer = io.BytesIO()
    qr.save(buffer, kind=kind, scale=scale, border=4)
    return buffer.getvalue()


def now_beijing() -> datetime:
    """The current time in Beijing (UTC+08:00), as dynamic codes encode it."""
    return datetime.now(UTC).astimezone(BEIJING)
