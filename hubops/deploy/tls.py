"""The certificate the proxy serves, against the one on the hub host's disk.

The proxy copies ``tls.cert`` and ``tls.key`` when it starts (its process runs unprivileged
and the key is often readable by root only), so a renewed certificate (``certbot renew``) is
served only after the proxy restarts. ``deploy`` and ``invoke tls.reload`` compare what is
served with the file and restart the proxy, then the hub (which puts every route back into the
new proxy); user servers keep running and users stay logged in.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from hubops.host.base import Host, quote
from hubops.plan.model import PROXY_PORT, Plan

# run in the hub container, which shares a network with the proxy
SERVED = (
    "import ssl, sys\n"
    "try:\n"
    "    print(ssl.get_server_certificate((sys.argv[1], int(sys.argv[2])), timeout=5))\n"
    "except OSError as exc:\n"
    "    sys.exit(f'no TLS answer from {sys.argv[1]}:{sys.argv[2]}: {exc}')\n"
)


def fingerprint(pem: str) -> str:
    """SHA-256 of the first certificate of a PEM chain (what a browser shows)."""
    return x509.load_pem_x509_certificate(pem.encode()).fingerprint(hashes.SHA256()).hex(":")


def same_certificate(a: str, b: str) -> bool:
    first = x509.load_pem_x509_certificate(a.encode())
    second = x509.load_pem_x509_certificate(b.encode())
    return first.public_bytes(serialization.Encoding.DER) == second.public_bytes(
        serialization.Encoding.DER
    )


def key_problem(cert_pem: str, key_pem: str, cert_path: str, key_path: str) -> str | None:
    """Why ``key_pem`` cannot serve ``cert_pem`` (None: it can)."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem.encode())
    except ValueError:
        return f"{cert_path} is not a PEM certificate"
    try:
        key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    except (ValueError, TypeError):
        return f"{key_path} is not an unencrypted PEM private key"
    fmt = (serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    if cert.public_key().public_bytes(*fmt) != key.public_key().public_bytes(*fmt):
        return f"{key_path} is not the key of {cert_path}"
    return None


def served_certificate(host: Host, plan: Plan) -> str | None:
    """The PEM the proxy serves now, asked from inside the hub (None: no answer)."""
    hub = next(c for c in plan.containers if c.role == "hub")
    proxy = next(c for c in plan.containers if c.role == "proxy")
    result = host.run(
        quote("docker", "exec", hub.name, "python3", "-c", SERVED, proxy.name, str(PROXY_PORT)),
        check=False,
        timeout=30,
    )
    text = result.stdout.strip()
    return text if result.ok and "BEGIN CERTIFICATE" in text else None
