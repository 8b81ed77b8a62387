"""``python -m spam_assets.aks_cli``: the AKS steps the CI/CD workflows run outside Dagster.

``render``  the release's manifests (values from SPAM_* settings) to a file, validated
            against the Kubernetes schemas: what a reviewer diffs before a deploy.
``smoke``   ``helm test`` of a deployed release (in-cluster prediction with a real key).
``status``  the release's revision, status and image.
Exit code 0 on success, 2 with the reason on stderr otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from spam_assets.lib import aks
from spam_serving.settings import get_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="spam_assets.aks_cli")
    parser.add_argument("command", choices=("render", "smoke", "status"))
    parser.add_argument("--environment", choices=aks.ENVIRONMENTS, required=True)
    parser.add_argument("--image-tag", help="render: the image tag (model + code version)")
    parser.add_argument("--image-digest", help="render: sha256:... pin")
    parser.add_argument("--out", type=Path, help="render: manifest file (default stdout)")
    parser.add_argument("--timeout", type=int, default=300)
    args = parser.parse_args(argv)
    s = get_settings()
    target = aks.cluster_targets(s)[args.environment]
    release = aks.release_name(s.aks_release_prefix, args.environment)
    try:
        if args.command == "render":
            if not (s.aks_registry and args.image_tag):
                raise aks.DeployError("render needs SPAM_AKS_REGISTRY and --image-tag")
            image = aks.ImageSpec(
                s.aks_registry, s.aks_image_repository, args.image_tag, args.image_digest
            )
            values = aks.release_values(s, args.environment, image)
            docs = aks.render_valid(values, release, target.namespace)
            text = yaml.safe_dump_all(docs, sort_keys=False)
            if args.out:
                args.out.write_text(text)
                print(f"{len(docs)} manifests of {release} -> {args.out}")
            else:
                print(text)
        elif args.command == "smoke":
            aks.check_reachable(target)
            result = aks.smoke_test(target, release, args.timeout)
            print(result.get("logs", "").strip() or f"{release}: smoke test passed")
        else:
            aks.check_reachable(target)
            print(json.dumps(aks.release_status(target, release), indent=2))
    except (aks.DeployError, ValueError) as exc:
        print(f"{args.command} {release}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
