"""Pieces of the Celery publisher's fast path that need no broker."""

from __future__ import annotations

import uuid

from workers.publisher import uuid4_text


def test_uuid4_text_makes_random_version_4_uuids_in_canonical_form() -> None:
    seen = set()
    for _ in range(5000):
        text = uuid4_text()
        parsed = uuid.UUID(text)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
        assert str(parsed) == text
        seen.add(text)
    assert len(seen) == 5000
