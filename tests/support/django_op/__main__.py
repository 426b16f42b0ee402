"""Run the test OpenID provider: ``python -m tests.support.django_op CONFIG.json``.

Migrates its SQLite DB, registers the users, their groups, the client and a signing key, then
serves over TLS with Werkzeug until terminated.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main(config_file: str) -> None:
    os.environ["HUBOPS_OP_CONFIG"] = config_file
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.support.django_op.settings"
    import django

    django.setup()
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from django.contrib.auth.models import Group, User
    from django.core.management import call_command
    from django.core.wsgi import get_wsgi_application
    from oidc_provider.models import Client, ResponseType, RSAKey
    from werkzeug.serving import run_simple

    config = json.loads(Path(config_file).read_text())
    call_command("migrate", verbosity=0)
    for spec in config["users"]:
        user = User.objects.create_user(
            spec["username"], f"{spec['username']}@lab.example.org", spec["password"]
        )
        for name in spec["groups"]:
            user.groups.add(Group.objects.get_or_create(name=name)[0])
    client = Client.objects.create(
        name="hubops",
        client_type="confidential",
        client_id=config["client"]["client_id"],
        client_secret=config["client"]["client_secret"],
        require_consent=False,
    )
    client.redirect_uris = config["client"]["redirect_uris"]
    client.save()
    client.response_types.add(ResponseType.objects.get(value="code"))
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    RSAKey.objects.create(key=pem.decode())
    run_simple(
        config["host"],
        int(config["port"]),
        get_wsgi_application(),
        ssl_context=(config["cert"], config["key"]),
        threaded=True,
    )


if __name__ == "__main__":
    main(sys.argv[1])
