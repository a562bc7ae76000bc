"""Health card cryptography benchmark (issue 5).

Run: .venv/bin/python bench/bench_cards.py   (about a minute; prints a Markdown table)
Measures offline credential verification (SM2, ES256), dynamic-code verification and issuance
(EHC ID + signed credential + QR text) on one core and with two processes, then runs
``openssl speed sm2`` as the same-run peer.
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import shutil
import subprocess
import time
from collections.abc import Callable

from healthroam.cards.cose import Es256Signer, Signer, Sm2Signer
from healthroam.cards.credential import card_ref, issue_credential, worst_case_example
from healthroam.cards.ehc_id import derive_ehc_id
from healthroam.cards.qr import DynamicCodeVerifier, make_dynamic_code
from healthroam.cards.trustlist import IssuerKey, TrustList, verify_offline

NOW = 1_795_000_000
ROOT_KEY = bytes(range(16))
QR_KEY = bytes(range(16, 32))


def rate(fn: Callable[[], object], seconds: float = 3.0) -> float:
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(50):
            fn()
        n += 50
    return n / elapsed


def offline(signer: Signer, public: bytes) -> float:
    trust = TrustList(
        1, NOW, 86400, (IssuerKey(signer.key_id, signer.algorithm, public, 0, 2**40),)
    )
    text = issue_credential(worst_case_example(NOW), signer)
    return rate(lambda: verify_offline(text, trust, NOW + 10))


def dynamic(n: int = 200_000) -> float:
    texts = [make_dynamic_code(f"{i:064X}", "K1", QR_KEY, NOW) for i in range(n)]
    verifier = DynamicCodeVerifier({"K1": QR_KEY}, 60, lambda: NOW + 10)
    start = time.perf_counter()
    for text in texts:
        verifier.verify(text)
    return n / (time.perf_counter() - start)


def issue_batch(n: int) -> float:
    signer = Sm2Signer.generate("HN26A")
    base = worst_case_example(NOW)
    start = time.perf_counter()
    for i in range(n):
        ehc_id = derive_ehc_id(ROOT_KEY, f"{i:064x}", "01", f"46010019900101{i % 10000:04d}")
        issue_credential(dataclasses.replace(base, card_ref=card_ref(ehc_id)), signer)
    return n / (time.perf_counter() - start)


def main() -> None:
    argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0]).parse_args()
    sm2, es = Sm2Signer.generate("HN26A"), Es256Signer.generate("HN26E")
    rows = [
        ("offline verification, SM2-SM3 (1 core)", offline(sm2, sm2.public_key_bytes())),
        ("offline verification, ES256 (1 core)", offline(es, es.public_key_bytes())),
        ("dynamic-code verification (1 core)", dynamic()),
    ]
    one = issue_batch(5000)
    with multiprocessing.Pool(2) as pool:
        start = time.perf_counter()
        pool.map(issue_batch, [5000, 5000])
        two = 10000 / (time.perf_counter() - start)
    rows += [("issuance, SM2 (1 core)", one), ("issuance, SM2 (2 processes)", two)]
    print("| measurement | per second |\n|---|---:|")
    for name, value in rows:
        print(f"| {name} | {value:,.0f} |")
    print(f"\n1,000,000 cards: {1e6 / one / 60:.1f} min on 1 core, {1e6 / two / 60:.1f} min on 2")
    if shutil.which("openssl"):
        out = subprocess.run(
            ["openssl", "speed", "-seconds", "3", "sm2"],
            capture_output=True,
            text=True,
            check=False,
        )
        print("\nopenssl speed sm2:\n" + "\n".join(out.stdout.strip().splitlines()[-2:]))
    else:
        print("\nopenssl not installed: no same-run peer")


if __name__ == "__main__":
    main()
