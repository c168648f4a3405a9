"""JSON responses in UTF-8, so that Chinese (reason texts, notices, statements) reads as characters in
curl rather than as \\u escapes.

Only text that UTF-8 cannot carry, a lone surrogate, falls back to ASCII escapes: the ledger refuses such
text at its doors, but the same provider also encodes what Flask's test client sends, where a test may
want to send exactly that. Hashed encodings never come through here: ledger/domain/chain.py's
canonical() stays ASCII-escaped.
"""

from __future__ import annotations

import re
from typing import Any

from flask.json.provider import DefaultJSONProvider

_SURROGATE = re.compile("[\ud800-\udfff]")


class Utf8JsonProvider(DefaultJSONProvider):
    ensure_ascii = False

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        text = super().dumps(obj, **kwargs)
        if _SURROGATE.search(text):
            return super().dumps(obj, **{**kwargs, "ensure_ascii": True})
        return text
