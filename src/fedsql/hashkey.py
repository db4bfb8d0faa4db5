"""The federation's hash key: making one, and a fingerprint that names it without revealing it.

Every agency's ``hash`` masks are keyed HMAC-SHA256 with one secret shared by the
federation (``hash_key_file`` under ``[connector]`` and ``[coordinator]``), so
that equal values hash equal across agencies and join. Two agencies with
different keys join nothing, silently; so each connector reports its key's
**fingerprint** (GetCatalog and GetStatus) and ``fedsql status``/``catalog``
show them and warn when they differ.

The fingerprint is HMAC-SHA256(key, a fixed label), cut to 64 bits. It reveals
nothing of the key beyond what the hashed values an analyst already sees reveal
(each is one HMAC with the key: testing a guessed key against them costs the
same), and the label keeps it from being the hash of any value.

>>> fingerprint(b"0" * 32)
'hk:cdff0cea772bbd61'
>>> fingerprint(None)
''
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from fedsql.errors import ConfigError

LABEL = b"fedsql hash key fingerprint v1"
KEY_BYTES = 32  # 256 bits of randomness, written as 64 hex characters


def fingerprint(key: bytes | None) -> str:
    """``hk:`` and 16 hex digits naming the key ("" for no key)."""
    if not key:
        return ""
    return "hk:" + hmac.new(key, LABEL, hashlib.sha256).hexdigest()[:16]


def make_key_file(path: Path, force: bool = False) -> str:
    """Write a new random key to ``path`` (mode 0600); returns its fingerprint.

    Refuses to replace an existing key unless ``force``: the federation's hashed
    values (and any the agencies keep) are only comparable under one key.
    """
    if path.exists() and not force:
        raise ConfigError(
            f"{path} already exists: a federation has one hash key, and a new one "
            "changes every hashed value; copy that file to the agencies instead, or pass "
            "--force to replace it"
        )
    if path.is_dir():
        raise ConfigError(f"{path} is a directory; give the key file's path")
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(KEY_BYTES).encode()
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key + b"\n")
    os.chmod(path, 0o600)
    return fingerprint(key)  # load_hash_key strips the newline: the same bytes
