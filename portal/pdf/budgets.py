"""Resource budgets that bound the work done on one uploaded PDF."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Budgets:
    """Limits checked before and while a PDF is processed.

    Attributes:
        max_pages: Pages per document.
        max_objects: Indirect objects per document.
        max_decoded_bytes: Sum of the decoded sizes of all streams, estimated before anything is decoded.
        max_image_pixels: Width x height of one image, read from its dictionary or JBIG2 header.
        max_nesting: Depth of nested arrays and dictionaries.
        timeout_seconds: Wall-clock time for one job; the worker is killed when it runs over.
        memory_bytes: Address-space limit (RLIMIT_AS) of the worker process and its children.
    """

    max_pages: int = 500
    max_objects: int = 100_000
    max_decoded_bytes: int = 256 * 2**20
    max_image_pixels: int = 50_000_000
    max_nesting: int = 64
    timeout_seconds: float = 60.0
    memory_bytes: int = 1 * 2**30
