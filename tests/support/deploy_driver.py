"""One deploy of a scratch environment as its own process, printing each step as it starts
(``STEP <step> <what>``, with the step's name from hubops.deploy.steps) and ``DEPLOYED`` at the
end: the fault suite kills this process at a step.

    python -m tests.support.deploy_driver CHECKOUT ENV SECRETS_JSON [--hub-image REF]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pydantic import SecretStr

from hubops.config import environments
from hubops.deploy.run import deploy
from hubops.host.target import image_fetcher, open_host
from hubops.images import table as images
from hubops.plan.render import render
from tests.support.checkout import REPO_ROOT


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkout", type=Path)
    parser.add_argument("env")
    parser.add_argument("secrets")
    parser.add_argument("--hub-image")
    parser.add_argument("--transfer", action="store_true")
    args = parser.parse_args()
    env = environments.load(args.checkout, args.env)
    out = render(args.checkout, env, images.revisions(REPO_ROOT))
    plan = out.plan
    if args.hub_image:
        plan = plan.model_copy(
            update={
                "containers": [
                    c.model_copy(update={"image": args.hub_image}) if c.role == "hub" else c
                    for c in plan.containers
                ]
            }
        )
    values = {k: SecretStr(v) for k, v in json.loads(args.secrets).items()}
    with open_host(args.checkout, env) as host:
        deploy(
            host,
            plan,
            env.settings,
            (out.directory / "jupyterhub_config.py").read_text(),
            values,
            image_fetcher(env, values, args.transfer),
            progress=lambda step, m: print(f"STEP {step.value} {m}", flush=True),
        )
    print("DEPLOYED", flush=True)


if __name__ == "__main__":
    main()
