"""Client-side TLS trust: a CA bundle (PEM) -> the SSL context httpx verifies the server with.

Shared by the CLI/SDK (``controlplane.client``) and the agent (``agent.client``), which may only
import ``controlplane.core``.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path


class CABundleError(ValueError):
    """The CA bundle is missing or not PEM certificates; the message names the file."""


def verify_with(ca_bundle: str | os.PathLike | None) -> ssl.SSLContext | bool:
    """httpx ``verify=``: True (the system's trust store) without a bundle, else trust only it.

    Certificates in the bundle are trust anchors even when they are not CAs (partial chains), so
    a self-signed server certificate or a pinned leaf can be passed as the bundle itself.
    """
    if not ca_bundle:
        return True
    path = Path(ca_bundle).expanduser()
    if not path.is_file():
        raise CABundleError(f"CA bundle {path} does not exist (a PEM file of certificates)")
    try:
        ctx = ssl.create_default_context(cafile=str(path))
    except ssl.SSLError as err:
        raise CABundleError(f"CA bundle {path} holds no PEM certificate ({err.reason or err})") from None
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return ctx


def is_untrusted_certificate(err: BaseException) -> bool:
    """True when a connection failed because the server's certificate could not be verified."""
    for _ in range(8):  # the ssl error sits a few causes down (httpx -> httpcore -> ssl)
        if err is None:
            return False
        if isinstance(err, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(err):
            return True
        err = err.__cause__ or err.__context__
    return False
