"""Exceptions raised by the key ring and the envelope format.

Messages name files, key ids, blob ids and segment numbers, which are not secret. They never contain key
material, plaintext or the content of a key file.
"""


class CryptoError(Exception):
    """Base class for the expected failures of ``portal.crypto``."""


class KeyRingError(CryptoError):
    """The key file is missing, unreadable, malformed, or cannot be written."""


class KeyUnavailable(CryptoError):
    """A key-encryption key id is unknown to the key ring or has been retired."""


class WrappedKeyInvalid(CryptoError):
    """A wrapped data key failed its integrity check under the KEK named with it."""


class BlobIntegrityError(CryptoError):
    """An encrypted blob failed authentication: altered, truncated, reordered, spliced, or the wrong key."""
