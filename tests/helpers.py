"""Helpers shared by test modules (test modules never import each other).

Credential canaries: unguessable tokens, so that "the secret appears nowhere" can neither
pass by luck nor fail on an unrelated common word. moto's S3 server accepts any key pair.
"""

from __future__ import annotations

#: An access-key id and a secret that must never appear in anything otaudit writes or prints.
CANARY_KEY = "AKIAQ7ZC2M9XW4OTAUDIT"
CANARY_SECRET = "cnry-5f0e9b3a7d21c8e4-otaudit"


def s3_options(endpoint_url: str) -> dict:
    """fsspec storage options for a moto endpoint, with the canary credentials."""
    return {
        "key": CANARY_KEY,
        "secret": CANARY_SECRET,
        "client_kwargs": {"endpoint_url": endpoint_url},
    }
