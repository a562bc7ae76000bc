from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from tongsuopy.crypto.ciphers import Cipher as TCipher
from tongsuopy.crypto.ciphers import algorithms as talgorithms
from tongsuopy.crypto.ciphers import modes as tmodes

from healthroam.cards.ehc_id import (
    check_ehc_id,
    derive_ehc_id,
    diversification_factor,
    id_types,
    user_authentication_key,
    zero_pad,
)
from healthroam.errors import InvalidInput

ROOT_KEY = bytes.fromhex("00112233445566778899AABBCCDDEEFF")
MASTER = "0123456789ABCDEFFEDCBA987654321000112233445566778899AABBCCDDEEFF"


def tongsuo_sm4_ecb(key: bytes, data: bytes) -> bytes:
    """SM4 from a different library (Tongsuo), so the KAT is not computed by the code under test."""
    enc = TCipher(talgorithms.SM4(key), tmodes.ECB()).encryptor()
    return bytes(enc.update(data) + enc.finalize())


def test_sm4_official_vector_gbt_32907() -> None:
    k = bytes.fromhex("0123456789abcdeffedcba9876543210")
    enc = Cipher(algorithms.SM4(k), modes.ECB()).encryptor()
    assert (enc.update(k) + enc.finalize()).hex() == "681edf34d206965e86b3e94f536e4246"
    assert tongsuo_sm4_ecb(k, k).hex() == "681edf34d206965e86b3e94f536e4246"


def test_diversification_factor_is_xor_of_groups() -> None:
    # Worked by hand: 0123..EF ^ FEDC..10 = FFFF..FF; ^ 0011..77 = FFEE..88; ^ 8899..FF = 7777..77
    assert diversification_factor(MASTER).hex().upper() == "7777777777777777"


def test_known_answer_against_independent_sm4() -> None:
    factor = bytes.fromhex("7777777777777777")
    uak = tongsuo_sm4_ecb(ROOT_KEY, factor + bytes.fromhex("8888888888888888"))
    assert user_authentication_key(ROOT_KEY, MASTER) == uak
    plain = b"01" + b"46010019900101123X" + bytes(12)  # 20 bytes -> 32
    expected = tongsuo_sm4_ecb(uak, plain).hex().upper()
    got = derive_ehc_id(ROOT_KEY, MASTER, "01", "46010019900101123x")
    assert got == expected
    assert len(got) == 64
    check_ehc_id(got)


def test_lowercase_master_index_is_the_same_person() -> None:
    a = derive_ehc_id(ROOT_KEY, MASTER, "03", "E12345678")
    assert derive_ehc_id(ROOT_KEY, MASTER.lower(), "03", "E12345678") == a
    assert derive_ehc_id(ROOT_KEY, MASTER, "01", "E12345678") != a


def test_zero_pad() -> None:
    assert zero_pad(b"") == b""
    assert zero_pad(b"a") == b"a" + bytes(15)
    assert zero_pad(bytes(16)) == bytes(16)


def test_id_type_table() -> None:
    table = id_types()
    assert table["01"].name == "居民身份证"
    assert table["07"].name == "台湾居民来往内地通行证"
    assert set(table) == {"01", "02", "03", "04", "05", "06", "07", "99"}


@pytest.mark.parametrize(
    ("args", "expression", "fragment"),
    [
        ((ROOT_KEY, MASTER[:-2], "01", "1"), "masterIndexId", "64 hex"),
        ((ROOT_KEY, MASTER[:-1] + "G", "01", "1"), "masterIndexId", "non-hex"),
        ((ROOT_KEY, MASTER, "08", "1"), "idType", "unknown ID type"),
        ((ROOT_KEY, MASTER, "01", ""), "idNumber", "1-30"),
        ((ROOT_KEY, MASTER, "01", "4601 0019"), "idNumber", "1-30"),
        ((ROOT_KEY[:15], MASTER, "01", "1"), "rootKey", "16 bytes"),
    ],
)
def test_invalid_input_reasons(
    args: tuple[bytes, str, str, str], expression: str, fragment: str
) -> None:
    with pytest.raises(InvalidInput) as info:
        derive_ehc_id(*args)
    assert info.value.expression == expression
    assert fragment in info.value.detail


def test_error_messages_carry_no_personal_data() -> None:
    with pytest.raises(InvalidInput) as info:
        derive_ehc_id(ROOT_KEY, MASTER, "01", "46010019900101123X!")
    assert "4601" not in str(info.value)


@pytest.mark.parametrize("bad", ["", "AB", "a" * 64, "G" * 64, "A" * 65, "A" * 160])
def test_check_ehc_id_refuses(bad: str) -> None:
    with pytest.raises(InvalidInput):
        check_ehc_id(bad)
