"""What tokenising through an oblivious PRF (RFC 9497) would cost, against the HMAC tokens used now.

Today every member holds the identity key and computes `HMAC-SHA256(key, type:value)` itself; the server
keys each token again with a secret of its own before storing it (`ledger/services/identifiers.py`).
An OPRF would let members tokenise without ever holding a key: the member blinds the identifier, the
server evaluates the blinded element with its key, the member unblinds. RFC 9497's OPRF mode per
identifier costs the member HashToGroup, Blind (one scalar multiplication) and Finalize (one more, by the
inverted blind), and the server one scalar multiplication (Evaluate), plus a round trip to the server
before the identifier can be used at all.

`cryptography` exposes no raw group arithmetic, so this measures the scalar multiplications through the
nearest public operation, an ECDH exchange (exactly one variable-base scalar multiplication), for the
RFC's P-256 suite and for X25519 (the Montgomery form of the curve behind ristretto255), and prints them
beside the HMAC token and the server's re-keying HMAC, measured in the same run.

    .venv/bin/python benchmarks/oprf_cost.py [--n 20000]
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import os
import time
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric import ec, x25519


def per_op(fn: Callable[[], object], n: int) -> float:
    fn()
    started = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - started) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    n = parser.parse_args().n

    key, server_key = os.urandom(32), os.urandom(32)
    member_token = hmac.new(key, b"phone:+8613800138000", hashlib.sha256).hexdigest().encode()
    p256_private = ec.generate_private_key(ec.SECP256R1())
    p256_peer = ec.generate_private_key(ec.SECP256R1()).public_key()
    x_private = x25519.X25519PrivateKey.generate()
    x_peer = x25519.X25519PrivateKey.generate().public_key()

    hmac_us = per_op(lambda: hmac.new(key, b"phone:+8613800138000", hashlib.sha256).hexdigest(), n)
    rekey_us = per_op(lambda: hmac.new(server_key, member_token, hashlib.sha256).hexdigest(), n)
    p256_us = per_op(lambda: p256_private.exchange(ec.ECDH(), p256_peer), n // 10)
    x_us = per_op(lambda: x_private.exchange(x_peer), n // 10)

    print(f"per identifier, mean of {n:,} (scalar multiplications: {n // 10:,}); shared machine, noisy")
    print(f"  baseline  HMAC token (member side, today)          {hmac_us:8.2f} us")
    print(f"  today     server re-keying HMAC                     {rekey_us:8.2f} us")
    print(f"  one scalar multiplication, P-256 (ECDH)             {p256_us:8.2f} us")
    print(f"  one scalar multiplication, X25519                   {x_us:8.2f} us")
    print("OPRF(P-256, SHA-256) estimate, per identifier (HashToGroup counted as one multiplication):")
    print(f"  server Evaluate   ~1 mult   {p256_us:8.1f} us  = {p256_us / hmac_us:6.0f} x the HMAC token")
    print(f"  member Blind+Fin  ~3 mults  {3 * p256_us:8.1f} us  + one extra round trip before each lookup")
    print(f"  one API core at 100% on Evaluate alone: {1e6 / p256_us:,.0f} identifiers/s")


if __name__ == "__main__":
    main()
