from __future__ import annotations

import pytest

from healthroam.cards.cose import Es256Signer, Sm2Signer


@pytest.fixture(scope="session")
def sm2_signer() -> Sm2Signer:
    return Sm2Signer.generate("HN26A")


@pytest.fixture(scope="session")
def es256_signer() -> Es256Signer:
    return Es256Signer.generate("HN26E")


@pytest.fixture(scope="session")
def trust_list_signer() -> Sm2Signer:
    return Sm2Signer.generate("TL1")
