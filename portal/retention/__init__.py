"""Retention and erasure: the purge clocks, erasure on request, legal holds and key rotation.

Documents and their recipient copies are deleted by crypto-shredding: the data key row is deleted in the
transaction that records the deletion, and the encrypted bytes are removed only after that commit. A copy
of the bytes restored from a backup therefore stays unreadable. The access log is never shortened here.
"""
