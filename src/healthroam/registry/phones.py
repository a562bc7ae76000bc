"""Telephone number normalisation for the master patient index (电话号码标准化).

Sources write one number many ways: ``+86 138-0013-8000``, ``0086 13800138000``,
``（0898）6612 3456``, ``０８９８－６６１２３４５６转８０１``. This module reduces each to one
canonical digit string so numbers compare equal:

* mobile (手机): 11 digits ``1[3-9]xxxxxxxxx``;
* landline (固定电话): area code with its leading 0 plus the local number, no separator
  (``0898-66123456`` -> ``089866123456``);
* service (400/800 numbers): 10 digits;
* international (outside mainland China): ``+`` country code and number (E.164).

:func:`check_phone` never raises and explains a rejection; :func:`normalize_phone` raises
``InvalidInput``. Reasons never contain the number.
"""

from __future__ import annotations

import enum
import re
import unicodedata
from dataclasses import dataclass

from healthroam.errors import InvalidInput


class PhoneKind(enum.StrEnum):
    MOBILE = "mobile"
    LANDLINE = "landline"
    SERVICE = "service"
    INTERNATIONAL = "international"


@dataclass(frozen=True, slots=True)
class PhoneCheck:
    """Outcome of checking one number: canonical form if valid, otherwise the reason."""

    valid: bool
    canonical: str = ""
    kind: PhoneKind | None = None
    extension: str = ""
    reason: str = ""

    @property
    def e164(self) -> str:
        """The number in E.164 (``+8613800138000``, ``+8689866123456``).

        "" if invalid, and for 400/800 numbers, which cannot be dialled from abroad.
        """
        if not self.valid or self.kind in (None, PhoneKind.SERVICE):
            return ""
        if self.kind is PhoneKind.INTERNATIONAL:
            return self.canonical
        if self.kind is PhoneKind.LANDLINE:
            return "+86" + self.canonical[1:]
        return "+86" + self.canonical


# Reasons, kept here so callers and tests can compare them.
EMPTY = "phone number is empty"
BAD_CHARACTERS = "phone number contains characters other than digits and separators"
TOO_SHORT = "phone number is too short"
TOO_LONG = "phone number is too long"
MOBILE_PREFIX = "mobile number must start with 13-19"
NO_AREA_CODE = "landline number has no area code"
LOCAL_NUMBER = "local number must be 7 or 8 digits and not start with 0 or 1"
UNRECOGNISED = "phone number format is not recognised"
INTERNATIONAL_LENGTH = "international number must have 8 to 15 digits with its country code"
BAD_EXTENSION = "extension must be 1 to 6 digits"

_SEPARATORS = re.compile(r"[\s\-\u2010-\u2015\u2212\ufe58\ufe63.()\[\]/]")
_EXTENSION = re.compile(r"(?:转|分机|ext\.?|x|#)\s*(\d*)$", re.IGNORECASE)
_MOBILE = re.compile(r"1[3-9]\d{9}")
# Area codes 010 and 020-029 are three digits with the 0; every other one is four.
_SHORT_AREA = re.compile(r"0(?:10|2\d)")


def _fail(reason: str) -> PhoneCheck:
    return PhoneCheck(valid=False, reason=reason)


def _national(digits: str, default_area_code: str | None) -> PhoneCheck:
    """Classify a number written without the country code."""
    if _MOBILE.fullmatch(digits):
        return PhoneCheck(True, digits, PhoneKind.MOBILE)
    if len(digits) == 12 and _MOBILE.fullmatch(digits[1:]) and digits[0] == "0":
        # A 0 dialled before a mobile number from another city (old practice).
        return PhoneCheck(True, digits[1:], PhoneKind.MOBILE)
    if len(digits) == 11 and digits[0] == "1":
        return _fail(MOBILE_PREFIX)
    if len(digits) == 10 and digits[:3] in {"400", "800"}:
        return PhoneCheck(True, digits, PhoneKind.SERVICE)
    if digits.startswith("0"):
        area_length = 3 if _SHORT_AREA.match(digits) else 4
        area, local = digits[:area_length], digits[area_length:]
        if len(local) < 7:
            return _fail(TOO_SHORT)
        if len(local) > 8:
            return _fail(TOO_LONG)
        if local[0] in "01" or (area_length == 3 and len(local) != 8):
            return _fail(LOCAL_NUMBER)
        return PhoneCheck(True, area + local, PhoneKind.LANDLINE)
    if len(digits) in (7, 8):
        if digits[0] in "01":
            return _fail(LOCAL_NUMBER)
        if default_area_code is None:
            return _fail(NO_AREA_CODE)
        return _national(default_area_code + digits, None)
    if len(digits) < 7:
        return _fail(TOO_SHORT)
    if len(digits) > 12:
        return _fail(TOO_LONG)
    return _fail(UNRECOGNISED)


def check_phone(raw: str, *, default_area_code: str | None = None) -> PhoneCheck:
    """Normalise and classify a phone number; never raises.

    ``default_area_code`` (e.g. ``"0898"`` for Hainan) is put in front of a bare 7- or 8-digit
    local number; without it such numbers are rejected.
    """
    text = unicodedata.normalize("NFKC", raw).strip()
    if text[:4].lower() == "tel:":  # RFC 3966 URI, as some FHIR senders write it
        text = text[4:]
    extension = ""
    found = _EXTENSION.search(text.rstrip())
    if found:
        extension = found.group(1)
        if not 1 <= len(extension) <= 6:
            return _fail(BAD_EXTENSION)
        text = text[: found.start()]
    text = _SEPARATORS.sub("", text)
    if not text:
        return _fail(EMPTY)
    international = text.startswith("+") or text.startswith("00")
    digits = text.removeprefix("+")
    if not digits:
        return _fail(EMPTY)
    if not digits.isdigit() or not digits.isascii():
        return _fail(BAD_CHARACTERS)
    if international:
        digits = digits.removeprefix("00") if text.startswith("00") else digits
        if digits.startswith("86"):
            national = digits[2:]
            if not national.startswith("0") and not _MOBILE.fullmatch(national):
                national = "0" + national  # +86 898 ... drops the trunk 0 of the area code
            result = _national(national, None)
        else:
            if not 8 <= len(digits) <= 15:
                return _fail(INTERNATIONAL_LENGTH)
            result = PhoneCheck(True, "+" + digits, PhoneKind.INTERNATIONAL)
    elif len(digits) == 13 and digits.startswith("86") and _MOBILE.fullmatch(digits[2:]):
        # A bare 86 is stripped only before a mobile: local numbers may themselves start 86.
        result = PhoneCheck(True, digits[2:], PhoneKind.MOBILE)
    else:
        result = _national(digits, default_area_code)
    if result.valid and extension:
        return PhoneCheck(True, result.canonical, result.kind, extension)
    return result


def normalize_phone(
    raw: str, *, default_area_code: str | None = None, expression: str = "Patient.telecom"
) -> str:
    """The canonical form of a phone number, or ``InvalidInput`` with the reason.

    The error message names the rule that failed, never the number.
    """
    result = check_phone(raw, default_area_code=default_area_code)
    if not result.valid:
        raise InvalidInput(result.reason, expression=expression)
    return result.canonical
