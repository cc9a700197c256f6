"""Pseudonymous keys: patient and study identifiers never reach the outputs as they are,
unless the user asks for exactly that.

A key is HMAC-SHA256(salt, identifier), hex, first 24 characters (96 bits): the same salt
gives the same key in every run and every table, so results join to clinical data kept by
whoever holds the salt; without the salt the key reveals nothing. Names and birth dates are
never read into the job at all.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from dataclasses import dataclass

from cohort.errors import ConfigError

logger = logging.getLogger(__name__)

SALT_ENV = "COHORT_SALT"


@dataclass(frozen=True)
class IdentityConfig:
    salt: str | None = None  # secret; None: read COHORT_SALT
    keep_ids: bool = False  # write PatientID / StudyInstanceUID as they are (explicit opt-in)

    def __repr__(self) -> str:  # the salt is a secret: never in logs or manifests
        return f"IdentityConfig(salt={'***' if self.salt else None}, keep_ids={self.keep_ids})"

    def resolved(self) -> IdentityConfig:
        """The salt from the environment when not given.

        Raises:
            ConfigError: neither a salt nor ``keep_ids``.
        """
        if self.keep_ids:
            # the explicit flag wins over a salt in the environment; with --salt it is a
            # contradiction the user must resolve
            if self.salt:
                raise ConfigError("--keep-ids writes identifiers as they are and --salt hashes "
                                  "them: pass one of the two")
            if os.environ.get(SALT_ENV):
                logger.info("--keep-ids: identifiers are written as they are; %s is not used",
                            SALT_ENV)
            return IdentityConfig(salt=None, keep_ids=True)
        salt = self.salt or os.environ.get(SALT_ENV) or None
        if not salt:
            raise ConfigError(f"patient and study keys need a secret salt: pass --salt or set "
                              f"{SALT_ENV} (keep it with your clinical data, not with the "
                              "outputs), or pass --keep-ids to write identifiers as they are")
        return IdentityConfig(salt=salt, keep_ids=self.keep_ids)


def pseudonym(value: str | None, config: IdentityConfig) -> str | None:
    """The key written for an identifier (None stays None)."""
    if value is None or value == "":
        return None
    if config.salt:
        digest = hmac.new(config.salt.encode(), str(value).encode(), hashlib.sha256)
        return digest.hexdigest()[:24]
    if config.keep_ids:
        return str(value)
    raise ConfigError("no salt and no --keep-ids; call IdentityConfig.resolved() first")
