"""Build step: copy the server's normalisation and tokenising code (`ledger/identity.py`) into the client
as `ledger_client/_identity.py`, so that members tokenise exactly as the server does without a second copy
of the rules that could drift. The only change is the import of the exception type.

    python clients/python/vendor_identity.py          # write the file
    python clients/python/vendor_identity.py --check  # exit 1 if it differs (tests/unit/test_client_identity.py)
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE.parents[1] / "ledger" / "identity.py"
TARGET = HERE / "ledger_client" / "_identity.py"
HEADER = (
    "# GENERATED from ledger/identity.py by clients/python/vendor_identity.py: do not edit here.\n"
    "# A test fails when the two differ; change ledger/identity.py and run the script.\n"
)
SERVER_IMPORT = "from ledger.errors import InvalidIdentifier\n"
CLIENT_IMPORT = "from ledger_client.errors import InvalidIdentifier\n"


def generated() -> str:
    source = SOURCE.read_text(encoding="utf-8")
    if source.count(SERVER_IMPORT) != 1:
        raise SystemExit(f"{SOURCE} no longer imports InvalidIdentifier as expected; update this script")
    return HEADER + source.replace(SERVER_IMPORT, CLIENT_IMPORT)


def main(argv: list[str]) -> int:
    text = generated()
    if "--check" in argv:
        if not TARGET.is_file() or TARGET.read_text(encoding="utf-8") != text:
            print(f"{TARGET} is out of date: run python {Path(__file__).relative_to(HERE.parents[1])}")
            return 1
        return 0
    TARGET.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
