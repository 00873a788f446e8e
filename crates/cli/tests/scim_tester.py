#!/usr/bin/env python3
"""Runs every check of scim2-tester against a SCIM server.

Usage: python scim_tester.py URL TOKEN CA_PEM_OR_EMPTY

  URL    the SCIM base URL, e.g. https://127.0.0.1:8443/scim/v2
  TOKEN  a provisioning bearer token
  CA_PEM_OR_EMPTY  a PEM file of the CA (or self-signed certificate) that signed the
         server's certificate; empty to use the system's trust store. Ignored for http://.

Prints each failed check (status ERROR or CRITICAL) with its reason, each deviation from a
SHOULD as a warning, then the summary line `checks=N failures=M`, and exits 1 when any
check failed (2 on a usage error). Needs the venv made by .ci/install-scim-tester.
The token is sent in the Authorization header only, and never printed.
"""

import ssl
import sys

import httpx2
from scim2_client.engines.httpx2 import SyncSCIMClient
from scim2_tester import Status, check_server

FAILED = (Status.ERROR, Status.CRITICAL)


def verification(url: str, ca_pem: str) -> ssl.SSLContext | bool:
    if not url.startswith("https://"):
        return True
    if not ca_pem:
        return True
    # Verifies the chain and the host name (localhost or 127.0.0.1) against this CA only.
    return ssl.create_default_context(cafile=ca_pem)


def describe(result) -> str:
    where = f"[{result.resource_type}] " if result.resource_type else ""
    reason = (result.reason or "").replace("\n", " | ")
    return f"{where}{result.title}: {result.status.name}: {reason}"


def main(argv: list[str]) -> int:
    if len(argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    url, token, ca_pem = argv[1], argv[2], argv[3]
    http = httpx2.Client(
        base_url=url,
        headers={"Authorization": f"Bearer {token}"},
        verify=verification(url, ca_pem),
        timeout=30.0,
    )
    with http:
        # A server that cannot be reached or refuses the token fails every check for the
        # same reason: say it once, plainly.
        try:
            probe = http.get("ServiceProviderConfig")
        except httpx2.HTTPError as exc:
            print(f"cannot reach {url}: {exc!r}")
            print("checks=0 failures=1")
            return 1
        if probe.status_code in (401, 403):
            print(f"{url} refused the token: HTTP {probe.status_code}")
            print("checks=0 failures=1")
            return 1
        results = check_server(SyncSCIMClient(http))

    ran = [r for r in results if r.status != Status.SKIPPED]
    failures = [r for r in ran if r.status in FAILED]
    for result in failures:
        print(f"FAILED {describe(result)}")
    for result in ran:
        if result.status == Status.DEVIATION:
            print(f"warning {describe(result)}")
    skipped = len(results) - len(ran)
    if skipped:
        print(f"skipped={skipped}")
    print(f"checks={len(ran)} failures={len(failures)}")
    return 1 if failures or not ran else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
