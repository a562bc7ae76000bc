"""EHC ID derivation (电子健康卡 ID), per the national scheme 国卫办规划发〔2018〕34号.

From a person's master index ID (主索引号, 64 hex characters = 32 bytes):

1. diversification factor (分散因子) = XOR of the master index ID's four 8-byte groups;
2. user authentication key (用户认证密钥) = SM4-ECB(root security key, factor || ~factor);
3. EHC ID = uppercase hex of SM4-ECB(user authentication key,
   ASCII(ID-type code + ID number) zero-padded to a multiple of 16 bytes).

Zero padding appends 0x00 bytes only when the length is not already a multiple of 16, so a
resident ID card ("01" + 18 characters = 20 bytes -> 32 bytes) gives a 64-character EHC ID.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from healthroam.errors import InvalidInput

_HEX64 = re.compile(r"[0-9A-Fa-f]{64}")
_HEX = re.compile(r"[0-9A-Fa-f]*")
# ID numbers are printable ASCII letters and digits (passport and permit numbers included).
_ID_NUMBER = re.compile(r"[0-9A-Za-z]{1,30}")
SM4_KEY_BYTES = 16


@dataclass(frozen=True, slots=True)
class IdType:
    """A certificate type (身份证件类别) from the national code table."""

    code: str
    name: str
    name_en: str


@lru_cache(maxsize=1)
def id_types() -> dict[str, IdType]:
    """The national table of certificate types (WS 364.3 CV02.01.101), keyed by code."""
    text = resources.files("healthroam.cards").joinpath("data/id_types.csv").read_text("utf-8")
    rows = csv.DictReader(text.splitlines())
    return {r["code"]: IdType(r["code"], r["name"], r["name_en"]) for r in rows}


def _sm4_ecb_encrypt(key: bytes, data: bytes) -> bytes:
    encryptor = Cipher(algorithms.SM4(key), modes.ECB()).encryptor()  # noqa: S305 (scheme mandates ECB)
    return encryptor.update(data) + encryptor.finalize()


def _check_key(key: bytes, expression: str) -> None:
    if not isinstance(key, bytes | bytearray) or len(key) != SM4_KEY_BYTES:
        raise InvalidInput(f"{expression} must be {SM4_KEY_BYTES} bytes", expression=expression)


def parse_master_index_id(master_index_id: str) -> bytes:
    """The 32 bytes of a master index ID given as 64 hex characters (either case)."""
    if not isinstance(master_index_id, str):
        raise InvalidInput("master index ID must be text", expression="masterIndexId")
    if len(master_index_id) != 64:
        raise InvalidInput(
            f"master index ID must be 64 hex characters, got {len(master_index_id)}",
            expression="masterIndexId",
        )
    if not _HEX64.fullmatch(master_index_id):
        raise InvalidInput(
            "master index ID contains a non-hex character", expression="masterIndexId"
        )
    return bytes.fromhex(master_index_id)


def diversification_factor(master_index_id: str) -> bytes:
    """XOR of the four 8-byte groups of the master index ID (分散因子, 8 bytes)."""
    raw = parse_master_index_id(master_index_id)
    value = 0
    for i in range(0, 32, 8):
        value ^= int.from_bytes(raw[i : i + 8], "big")
    return value.to_bytes(8, "big")


def user_authentication_key(root_key: bytes, master_index_id: str) -> bytes:
    """SM4-ECB(root security key, factor || ~factor): the 16-byte user authentication key."""
    _check_key(root_key, "rootKey")
    factor = diversification_factor(master_index_id)
    complement = bytes(b ^ 0xFF for b in factor)
    return _sm4_ecb_encrypt(bytes(root_key), factor + complement)


def check_id_document(id_type: str, id_number: str) -> None:
    """Refuse an unknown certificate type or an ID number that is not 1-30 letters/digits."""
    if not isinstance(id_type, str) or id_type not in id_types():
        raise InvalidInput("unknown ID type code", expression="idType")
    if not isinstance(id_number, str) or not _ID_NUMBER.fullmatch(id_number):
        raise InvalidInput("ID number must be 1-30 ASCII letters or digits", expression="idNumber")


def zero_pad(data: bytes, block: int = 16) -> bytes:
    """Append 0x00 bytes up to a multiple of ``block`` (nothing when already aligned)."""
    return data + b"\x00" * (-len(data) % block)


def derive_ehc_id(root_key: bytes, master_index_id: str, id_type: str, id_number: str) -> str:
    """The EHC ID (uppercase hex) for a person; see the module docstring for the steps.

    The ID number is used exactly as given apart from upper-casing (a trailing check character
    ``x`` of a resident ID number is the same as ``X``), so callers normalise it first.
    """
    check_id_document(id_type, id_number)
    uak = user_authentication_key(root_key, master_index_id)
    plain = zero_pad((id_type + id_number.upper()).encode("ascii"))
    return _sm4_ecb_encrypt(uak, plain).hex().upper()


def check_ehc_id(ehc_id: str) -> None:
    """Refuse text that cannot be an EHC ID: 32-128 uppercase hex characters, whole blocks."""
    if not isinstance(ehc_id, str):
        raise InvalidInput("EHC ID must be text", expression="ehcId")
    if len(ehc_id) % 32 or not 32 <= len(ehc_id) <= 128:
        raise InvalidInput("EHC ID must be 32, 64, 96 or 128 hex characters", expression="ehcId")
    if not _HEX.fullmatch(ehc_id) or ehc_id != ehc_id.upper():
        raise InvalidInput("EHC ID must be uppercase hex", expression="ehcId")
