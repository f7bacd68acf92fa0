"""Secrets that must travel on Kafka sealed: a webhook's signing secret is written to the
`webhooks` topic (so every adapter instance can sign) but only in authenticated encryption
(Fernet: AES-128-CBC + HMAC-SHA256) under a key that is never on the bus: PARCOURS_WEBHOOK_KEY,
or, in the development profile, one generated into the credential store.
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken
from pydantic import SecretStr

from parcours.security.errors import SealError

PREFIX = "fernet:"
#: the credential store's entry holding the development key
DEV_KEY_ENTRY = "webhook-sealing-key"


class Sealer:
    def __init__(self, key: SecretStr) -> None:
        # any high-entropy secret: hashed into the 32 bytes Fernet wants
        digest = hashlib.sha256(key.get_secret_value().encode()).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(digest))

    def seal(self, secret: str) -> str:
        return PREFIX + self._fernet.encrypt(secret.encode()).decode()

    def unseal(self, sealed: str) -> str:
        if not sealed.startswith(PREFIX):
            raise SealError("the value is not sealed (written in clear by an older version): register the webhook again")
        try:
            return self._fernet.decrypt(sealed[len(PREFIX):].encode()).decode()
        except InvalidToken:
            raise SealError("the sealed value does not open with this key (PARCOURS_WEBHOOK_KEY changed?)") from None
