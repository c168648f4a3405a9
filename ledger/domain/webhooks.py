"""Signed webhooks: the event vocabulary, the signature, the retry schedule and the target checks.

Why webhooks: a platform otherwise learns of a dispute (with a deadline that retracts its entry) only by
polling, and nothing tells a platform that a consumer it restricted was cleared (FCRA §611(d)). Signing
follows the Standard Webhooks specification (`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,`
base64 HMAC-SHA256 over `id.timestamp.body`, secrets `whsec_` + base64), done by the `standardwebhooks`
library so that every receiver's verifier agrees with us. Pure functions only: no network, no database.
"""

from __future__ import annotations

import base64
import ipaddress
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

from standardwebhooks import Webhook

# Each event goes only to the platform entitled to it (docs/webhooks.md):
# - dispute.opened, dispute.resolved, incident.retracted: to the platform that reported the incident;
# - subject.cleared: to each platform that looked the consumer up for refund_review in the last 180 days and
#   was answered with a restriction, carrying only that platform's own lookup ids (FCRA §611(d)).
EVENT_TYPES = ("dispute.opened", "dispute.resolved", "incident.retracted", "subject.cleared")
CLEARED_LOOKBACK_DAYS = 180

MAX_URL_LENGTH = 2048
MAX_BODY_BYTES = 64 * 1024  # what is sent: events are small, this is a bound, not a target
MAX_RESPONSE_BYTES = 16 * 1024  # what is read back before the connection is closed

# Cloud metadata services: AWS, GCP, Azure (169.254.169.254, link-local anyway), AWS IPv6, Alibaba Cloud.
METADATA = frozenset(ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200"))


def new_secret() -> str:
    """A Standard Webhooks secret: `whsec_` and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(os.urandom(32)).decode("ascii")


def sign(secret: str, message_id: str, at: datetime, body: str) -> dict[str, str]:
    """The three Standard Webhooks headers for one delivery attempt."""
    stamp = at.astimezone(UTC)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(stamp.timestamp())),
        # standardwebhooks reads the datetime as UTC (it replaces tzinfo), so hand it a naive UTC one.
        "webhook-signature": Webhook(secret).sign(message_id, stamp.replace(tzinfo=None), body),
    }


def backoff_seconds(attempt: int, base: float, cap: float = 2 * 3600) -> float:
    """Delay before attempt `attempt + 1`, after `attempt` failures: base, 2 base, 4 base, ..., at most `cap`
    (two hours by default, so that a 24-hour schedule still tries about twenty times)."""
    return float(min(cap, base * 2 ** max(0, attempt - 1)))


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str  # with the query string


def parse_url(url: str, *, https_only: bool) -> Target:
    """Check an endpoint URL's form; raise ValueError with a reason a client can read."""
    if len(url) > MAX_URL_LENGTH:
        raise ValueError(f"must be at most {MAX_URL_LENGTH} characters")
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http"):
        raise ValueError("must be an https:// URL")
    if parts.scheme != "https" and https_only:
        raise ValueError("must be https:// (plain http is accepted only in demo and test modes)")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not carry credentials; every request is signed instead")
    if parts.fragment:
        raise ValueError("must not have a fragment")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise ValueError("has an invalid port") from None
    host = parts.hostname
    if not host:
        raise ValueError("must name a host")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(parts.scheme, host, port, path)


def parse_networks(text: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """`LEDGER_WEBHOOK_ALLOW_NETWORKS`: comma-separated CIDRs an operator allows despite the rules below."""
    return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in text.split(",") if part.strip())


def refusal(
    addresses: Iterable[str], allowed: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network] = ()
) -> str | None:
    """Why a host resolving to these addresses must not be called (server-side request forgery), or None.
    Every address must pass, so a name that resolves to one public and one private address is refused."""
    found = False
    for text in addresses:
        found = True
        address = ipaddress.ip_address(text.split("%", 1)[0])
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address in network for network in allowed):
            continue
        if address in METADATA:
            return f"{address} is a cloud metadata address"
        if address.is_loopback:
            return f"{address} is a loopback address"
        if address.is_link_local:
            return f"{address} is a link-local address"
        if address.is_private:
            return f"{address} is a private address"
        if not address.is_global or address.is_multicast:
            return f"{address} is not a public unicast address"
    return None if found else "the host does not resolve"
