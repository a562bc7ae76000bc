"""Blocking keys: the indexed values under which a record can be found again in real time.

A new record is compared only with records that share at least one key, found through an
index in the database (never a scan). Keys are designed so that each error the sources make
still leaves a shared key: a mistyped ID keeps name + birth date; a homophone or traditional
name keeps the ID, or the pinyin reading + birth date; a transposed birth date keeps the ID, or
pinyin + birth year + sex; a foreign visitor keeps the passport.
"""

from __future__ import annotations

from healthroam.registry.model import NormalizedRecord

MAX_NAME_KEYS = 8


def blocking_keys(record: NormalizedRecord) -> frozenset[str]:
    keys: set[str] = set()
    if record.national_id:
        keys.add(f"id:{record.national_id}")
    for identifier in record.identifiers:
        keys.add(f"ox:{identifier}")
    if record.phone:
        keys.add(f"ph:{record.phone}")
    names = sorted(record.pinyin_keys)[:MAX_NAME_KEYS]
    if record.birth_date:
        for name in names:
            keys.add(f"nd:{name}|{record.birth_date}")
        if record.region and record.sex:
            keys.add(f"dr:{record.birth_date}|{record.region}|{record.sex}")
    if record.pinyin and record.birth_date and record.sex:
        keys.add(f"ny:{record.pinyin}|{record.birth_date[:4]}|{record.sex}")
    if record.name and not record.birth_date:
        keys.add(f"nm:{record.name}")
    return frozenset(keys)
