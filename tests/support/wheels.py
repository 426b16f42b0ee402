"""Wheels made on the spot, for installing packages as a user would with no index at hand:
pure-Python, tag py3-none-any, with the RECORD that pip checks."""

from __future__ import annotations

import base64
import hashlib
import io
import zipfile


def wheel(name: str, version: str, modules: dict[str, str]) -> tuple[str, bytes]:
    """(file name, content) of a wheel of distribution ``name`` holding ``modules``
    (path inside site-packages -> source text)."""
    dist = f"{name.replace('-', '_')}-{version}"
    info = f"{dist}.dist-info"
    files = {
        **modules,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{info}/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: hubops-tests\nRoot-Is-Purelib: true\n"
            "Tag: py3-none-any\n"
        ),
    }
    record = []
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for path, text in files.items():
            data = text.encode()
            zf.writestr(path, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            record.append(f"{path},sha256={digest.decode()},{len(data)}")
        record.append(f"{info}/RECORD,,")
        zf.writestr(f"{info}/RECORD", "\n".join(record) + "\n")
    return f"{dist}-py3-none-any.whl", buffer.getvalue()
