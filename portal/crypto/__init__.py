"""Key ring, envelope encryption of blobs, pseudonyms and forensic markers, built on ``cryptography``."""
