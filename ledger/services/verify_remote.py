"""`ledger log verify-remote`: a member's check of the log, with no database and no other member's data.

From the checkpoint it saved last time (--state), it fetches the latest signed checkpoint and checks:
1. the signature, with the log's verifier key (given, or trusted on first use and then pinned in the state);
2. a consistency proof from the saved checkpoint, so the log only grew (a fork or a shrink fails);
3. an inclusion proof for each of its own leaves (its receipts), and each receipt's signed promise; a leaf
   not included once its `integrate_by` has passed is a broken promise and fails;
4. optionally, it cosigns the new checkpoint as a witness (C2SP tlog-cosignature).
Only when everything checks out does it save the new checkpoint. On failure the state is left as it was,
so the evidence (the old checkpoint, and the offending one in the report) is kept.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import tempfile
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ledger.domain import merkle, note


class RemoteFailure(Exception):
    pass


@dataclass
class _Client:
    """One kept-alive HTTP(S) connection: a hundred proofs should cost a hundred round trips, not a
    hundred TCP (and TLS) handshakes."""

    base: urllib.parse.SplitResult
    api_key: str | None
    conn: http.client.HTTPConnection | None = None

    @classmethod
    def for_url(cls, url: str, api_key: str | None) -> _Client:
        base = urllib.parse.urlsplit(url.rstrip("/"))
        if base.scheme not in ("http", "https") or not base.hostname:
            raise RemoteFailure(f"{url!r} is not an http(s) URL")
        return cls(base, api_key)

    def _connection(self) -> http.client.HTTPConnection:
        if self.conn is None:
            cls = http.client.HTTPSConnection if self.base.scheme == "https" else http.client.HTTPConnection
            self.conn = cls(self.base.hostname or "", self.base.port, timeout=10)
        return self.conn

    def request(self, method: str, path: str, body: Any = None, auth: bool = False) -> tuple[int, Any]:
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if auth:
            if not self.api_key:
                raise RemoteFailure("an API key (--api-key or LEDGER_API_KEY) is needed for inclusion proofs")
            headers["Authorization"] = f"Bearer {self.api_key}"
        for attempt in (0, 1):
            conn = self._connection()
            try:
                conn.request(method, self.base.path + path, body=data, headers=headers)
                response = conn.getresponse()
                raw = response.read()
                break
            except (ConnectionError, http.client.HTTPException, OSError) as exc:
                conn.close()
                self.conn = None
                if attempt == 1:
                    raise RemoteFailure(f"{method} {path}: {type(exc).__name__}") from exc
        try:
            return response.status, json.loads(raw) if raw else None
        except ValueError as exc:
            raise RemoteFailure(f"{method} {path}: the answer is not JSON") from exc

    def get(self, path: str, auth: bool = False) -> tuple[int, Any]:
        return self.request("GET", path, auth=auth)


# Inclusion proofs are fetched over this many connections at once: each is a separate request the server
# answers in parallel, so a member checking a hundred receipts waits for about a quarter of the round trips.
PROOF_CONNECTIONS = 4


def _fetch_all(client: _Client, paths: list[str]) -> list[tuple[int, Any]]:
    """GET each path with the API key, in order, over up to PROOF_CONNECTIONS connections."""
    if len(paths) <= 1:
        return [client.get(path, auth=True) for path in paths]
    clients = [client] + [_Client(client.base, client.api_key) for _ in range(PROOF_CONNECTIONS - 1)]
    shares = [paths[n :: len(clients)] for n in range(len(clients))]
    try:
        with ThreadPoolExecutor(len(clients)) as pool:
            answered = list(
                pool.map(
                    lambda pair: [pair[0].get(p, auth=True) for p in pair[1]],
                    zip(clients, shares, strict=True),
                )
            )
    finally:
        for extra in clients[1:]:
            if extra.conn is not None:
                extra.conn.close()
    return [answered[i % len(clients)][i // len(clients)] for i in range(len(paths))]


def _load_state(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        state = json.loads(path.read_text())
    except ValueError as exc:
        raise RemoteFailure(f"the state file {path} is not JSON") from exc
    if not isinstance(state, dict):
        raise RemoteFailure(f"the state file {path} is not a JSON object")
    return state


def _save_state(path: Path, state: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent or Path("."), prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as out:
        json.dump(state, out, indent=2, sort_keys=True)
    os.replace(tmp, path)


def _parse_time(value: str) -> datetime:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def _receipts(path: str | None) -> list[dict[str, Any]]:
    if path is None:
        return []
    data = json.loads(Path(path).read_text())
    items = data if isinstance(data, list) else [data]
    out = []
    for item in items:
        receipt = item.get("receipt", item) if isinstance(item, dict) else None
        if not isinstance(receipt, dict) or "leaf_hash" not in receipt:
            raise RemoteFailure(
                "each receipt is a JSON object with leaf_hash, received_at, integrate_by, promise"
            )
        out.append(receipt)
    return out


def run(
    url: str,
    state_path: str,
    *,
    vkey: str | None = None,
    api_key: str | None = None,
    receipts_path: str | None = None,
    leaves: list[str] | None = None,
    witness_seed: str | None = None,
    witness_name: str = "witness.invalid/member",
    now: datetime | None = None,
) -> dict[str, Any]:
    path = Path(state_path)
    report: dict[str, Any] = {"ok": False, "url": url, "tree_size": None, "previous_size": 0}
    try:
        state = _load_state(path)
        client = _Client.for_url(url, api_key)
        _check(client, state, report, vkey, _receipts(receipts_path), leaves or [], now or datetime.now(UTC))
        if witness_seed:
            _cosign(client, report, witness_seed, witness_name)
    except (RemoteFailure, note.NoteError, merkle.ProofError) as exc:
        report["problem"] = str(exc)
        return report
    _save_state(path, report.pop("_state"))
    report["ok"] = True
    return report


def _check(
    client: _Client,
    state: dict[str, Any],
    report: dict[str, Any],
    vkey: str | None,
    receipts: list[dict[str, Any]],
    leaves: list[str],
    now: datetime,
) -> None:
    pinned = state.get("vkey")
    if vkey and pinned and vkey != pinned:
        raise RemoteFailure("the given --vkey differs from the key pinned in the state file")
    key_text = vkey or pinned
    if key_text is None:
        status, body = client.get("/v1/log/key")
        if status != 200:
            raise RemoteFailure(f"GET /v1/log/key answered {status}")
        key_text = body["vkey"]
        report["trusted_on_first_use"] = True
    verifier = note.Verifier.parse(key_text)
    status, body = client.get("/v1/log/checkpoint")
    if status != 200:
        raise RemoteFailure(f"GET /v1/log/checkpoint answered {status}")
    signed_note = body["note"]
    report["checkpoint"] = signed_note
    checkpoint = note.open_checkpoint(signed_note, verifier, verifier.name)
    report["tree_size"] = checkpoint.size
    report["root_hash"] = checkpoint.root.hex()

    old_size = int(state.get("tree_size") or 0)
    report["previous_size"] = old_size
    if old_size:
        old_root = bytes.fromhex(state["root_hash"])
        if checkpoint.size < old_size:
            raise RemoteFailure(
                f"fork: the log shrank from {old_size} to {checkpoint.size} leaves (the saved checkpoint is "
                "kept as evidence)"
            )
        proof: list[bytes] = []
        if checkpoint.size > old_size:
            status, body = client.get(f"/v1/log/consistency?from={old_size}&to={checkpoint.size}")
            if status != 200:
                raise RemoteFailure(f"no consistency proof from {old_size} to {checkpoint.size} ({status})")
            proof = [bytes.fromhex(p) for p in body["proof"]]
        try:
            merkle.verify_consistency(old_size, checkpoint.size, old_root, checkpoint.root, proof)
        except merkle.ProofError as exc:
            raise RemoteFailure(
                f"fork: checkpoint {checkpoint.size} is not consistent with the saved checkpoint {old_size} "
                f"({exc})"
            ) from exc

    included, pending = 0, 0
    wanted: list[tuple[str, dict[str, Any] | None]] = [(r["leaf_hash"], r) for r in receipts]
    wanted += [(leaf, None) for leaf in leaves]
    for leaf_hex, receipt in wanted:
        if receipt is not None:
            received, by = _parse_time(receipt["received_at"]), _parse_time(receipt["integrate_by"])
            if receipt.get("log_origin") != checkpoint.origin:
                raise RemoteFailure(f"receipt for {leaf_hex} names another log ({receipt.get('log_origin')})")
            note.verify_promise(
                verifier, checkpoint.origin, bytes.fromhex(leaf_hex), received, by, receipt["promise"]
            )
    answers = _fetch_all(
        client,
        [f"/v1/log/inclusion?leaf_hash={leaf_hex}&tree_size={checkpoint.size}" for leaf_hex, _ in wanted],
    )
    for (leaf_hex, receipt), (status, body) in zip(wanted, answers, strict=True):
        leaf = bytes.fromhex(leaf_hex)
        if status == 200:
            merkle.verify_inclusion(
                body["leaf_index"],
                checkpoint.size,
                leaf,
                [bytes.fromhex(p) for p in body["proof"]],
                checkpoint.root,
            )
            included += 1
            continue
        if status != 404:
            raise RemoteFailure(f"inclusion proof for {leaf_hex} answered {status}")
        if receipt is None:
            raise RemoteFailure(f"leaf {leaf_hex} is not in the log at size {checkpoint.size}")
        if now > _parse_time(receipt["integrate_by"]):
            raise RemoteFailure(
                f"broken promise: leaf {leaf_hex} was promised by {receipt['integrate_by']} and is not in the "
                f"log at size {checkpoint.size}"
            )
        pending += 1
    report["included"], report["pending"] = included, pending
    report["_state"] = {
        "vkey": verifier.vkey(),
        "origin": checkpoint.origin,
        "tree_size": checkpoint.size,
        "root_hash": checkpoint.root.hex(),
        "note": signed_note,
        "checked_at": note.format_time(now),
    }


def _cosign(client: _Client, report: dict[str, Any], seed_b64: str, name: str) -> None:
    signer = note.Signer.from_seed(name, base64.b64decode(seed_b64), note.COSIGNATURE_V1)
    text, _ = note.split_note(report["checkpoint"])
    line = signer.cosign(text, int(time.time()))
    status, body = client.request(
        "POST",
        "/v1/log/cosignatures",
        {"tree_size": report["tree_size"], "cosigner": signer.verifier.vkey(), "signature": line},
        auth=True,
    )
    if status != 200:
        raise RemoteFailure(f"the cosignature was refused ({status}: {body})")
    report["cosigned"] = signer.verifier.vkey()
