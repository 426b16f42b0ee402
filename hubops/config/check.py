"""Validate an environment without changing anything.

Validation covers the file (schema, types, cross-field rules), what it refers to on this
machine (CA bundle), and, with ``strict``, what build, push and deploy will need from this
machine: every secret and the SSH key file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hubops.config import environments, oidc, secrets
from hubops.config.environments import LoadedEnvironment
from hubops.config.settings import resolve_repo_path
from hubops.errors import ConfigError


@dataclass(frozen=True)
class CheckReport:
    env: LoadedEnvironment
    secrets: list[secrets.SecretStatus]
    discovered: dict[str, str] | None = None  # OIDC endpoints found by discovery (--strict)

    def lines(self) -> list[str]:
        s = self.env.settings
        files = " <- ".join(str(f) for f in reversed(self.env.files))
        target = f"ssh://{s.ssh.user}@{s.ssh.host}:{s.ssh.port}" if s.ssh else "local engine"
        out = [
            f"{self.env.name}: ok ({files})",
            f"  public URL   {s.public_url}  (OAuth callback {s.oauth_callback_url})",
            f"  login        {s.auth.type}"
            + (f" (scopes {' '.join(s.oauth_scopes)})" if s.oauth_scopes else ""),
            f"  images       {', '.join(s.singleuser.choices.values())}",
            f"  GPU policy   {s.gpu.policy}",
            f"  target       {target}",
        ]
        for trait, url in (self.discovered or {}).items():
            out.append(f"  discovered   {trait} {url}")
        for st in self.secrets:
            state = (
                f"from {st.source}"
                if st.source
                else (f"MISSING: {st.how_to_provide(self.env.name)} (deploy needs it)")
            )
            out.append(f"  secret       {st.spec.name}: {state}")
        return out


def check(repo_root: Path, name: str, strict: bool = False) -> CheckReport:
    env = environments.load(repo_root, name)
    s = env.settings
    if s.mirrors.ca_bundle is not None:
        bundle = resolve_repo_path(repo_root, s.mirrors.ca_bundle)
        if not bundle.is_file():
            origin = env.origins.get(("mirrors", "ca_bundle"), env.file)
            raise ConfigError(
                f"{origin}: mirrors.ca_bundle: got {s.mirrors.ca_bundle!r}; no such file on "
                "this machine; give the path of a PEM bundle (e.g. "
                "/etc/ssl/certs/ca-certificates.crt) or remove the key"
            )
    discovered = None
    if strict:
        secrets.resolve(repo_root, name, s)
        discovered = oidc.check_discovery(env)
        if s.ssh is not None and s.ssh.key_file is not None:
            key = resolve_repo_path(repo_root, s.ssh.key_file)
            if not key.is_file():
                origin = env.origins.get(("ssh", "key_file"), env.file)
                raise ConfigError(
                    f"{origin}: ssh.key_file: got {s.ssh.key_file!r}; no such file on this "
                    "machine; give the private key that logs in to the hub host, or remove the "
                    "key to use ssh-agent"
                )
    return CheckReport(env=env, secrets=secrets.status(repo_root, name, s), discovered=discovered)
