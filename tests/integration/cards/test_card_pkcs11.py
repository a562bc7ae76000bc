"""The PKCS#11 backend against a real SoftHSM2 token (a fresh token in a temporary folder).

Needs Debian's softhsm2 (scripts/system-deps installs it); it is not skipped when missing."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from pydantic import SecretStr

from healthroam.bootstrap import build
from healthroam.cards.cose import ALG_ES256, verifier_for
from healthroam.cards.credential import verify_credential
from healthroam.cards.model import CardAction
from healthroam.config import Settings
from healthroam.errors import InvalidInput
from healthroam.keys.backends import Pkcs11Config, open_signer
from healthroam.keys.model import KeyPurpose
from healthroam.keys.pkcs11 import Pkcs11Backend, close_sessions

from .conftest import add_person, principal

MODULE = "/usr/lib/softhsm/libsofthsm2.so"
PIN = "246810"


@pytest.fixture(scope="module")
def token(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pkcs11Config]:
    if shutil.which("softhsm2-util") is None:
        pytest.fail("softhsm2 is not installed: run scripts/system-deps")
    folder = tmp_path_factory.mktemp("softhsm")
    (folder / "tokens").mkdir()
    conf = folder / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {folder / 'tokens'}\nobjectstore.backend = file\n")
    # The library reads SOFTHSM2_CONF when it is first loaded in this process.
    os.environ["SOFTHSM2_CONF"] = str(conf)
    subprocess.run(
        [
            "softhsm2-util",
            "--init-token",
            "--free",
            "--label",
            "healthroam-test",
            "--so-pin",
            "13579",
            "--pin",
            PIN,
        ],
        check=True,
        capture_output=True,
        env={**os.environ, "SOFTHSM2_CONF": str(conf)},
    )
    yield Pkcs11Config(MODULE, "healthroam-test", PIN)
    close_sessions()


def test_keys_are_made_inside_the_token_and_sign_es256(token: Pkcs11Config) -> None:
    backend = Pkcs11Backend(token)
    generated = backend.generate("HSM0001", "ES256")
    assert generated.secret is None  # nothing leaves the token
    assert generated.public_key is not None
    assert len(generated.public_key) == 65
    signer = open_signer(backend.signer_spec("HSM0001", "ES256", None, generated.public_key))
    assert signer.algorithm == ALG_ES256
    verifier = verifier_for(ALG_ES256, generated.public_key)
    signature = signer.sign(b"to be signed")
    assert len(signature) == 64
    assert verifier.verify(signature, b"to be signed")
    assert not verifier.verify(signature, b"something else")


def test_sm2_is_refused_with_a_pointer_to_vendor_backends(token: Pkcs11Config) -> None:
    with pytest.raises(InvalidInput, match="vendor backend"):
        Pkcs11Backend(token).generate("HSM0002", "SM2")


def test_unknown_key_and_wrong_pin(token: Pkcs11Config) -> None:
    with pytest.raises(InvalidInput, match="not in PKCS#11 token"):
        Pkcs11Backend(token).signer("NOPE", "ES256")
    with pytest.raises(InvalidInput, match="cannot open PKCS#11 token"):
        Pkcs11Backend(replace(token, token_label="no-such-token")).signer("X", "ES256")


def test_cards_issued_with_hsm_keys_verify(
    token: Pkcs11Config, settings: Settings, tmp_path: Path
) -> None:
    hsm_settings = settings.model_copy(
        update={
            "card_key_backend": "pkcs11",
            "card_signing_algorithm": "ES256",
            "card_pkcs11_token_label": token.token_label,
            "card_pkcs11_pin": SecretStr(token.pin),
            "card_pkcs11_module": Path(token.module),
        }
    )
    with build(hsm_settings) as platform:
        made = platform.keys.init()
        assert {r.backend for r in made if not r.purpose.symmetric} == {"pkcs11"}
        who = principal()
        card = platform.cards.apply(who, master_index_id=add_person(platform), kind="electronic")
        card = platform.cards.act(who, card.id, CardAction.ISSUE)
        assert card.credential is not None
        key = platform.keys.current(KeyPurpose.ISSUING)
        assert key.public_key is not None
        verify_credential(
            card.credential,
            {key.key_id: verifier_for(ALG_ES256, key.public_key)}.get,
            time.time(),
        )
        assert platform.cards.trust_list()
