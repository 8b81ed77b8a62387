"""The AKS deployment tests' shared pieces: the ``bento`` value ``aks_deployment`` receives,
the resource with the azure target, and a kubeconfig pointing at a closed port (the real
Helm engine then fails to dial, which is the unreachable-cluster path)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from spam_assets.defs.resources import AksResource, build_resources

BENTO = {
    "model_version": "7",
    "code_hash": "0123456789abcdef",
    "bento_tag": "spam_classifier:abc123",
    "model_tag": "spam_model:v7",
}


@dg.asset(name="bento")
def bento_value() -> dict:
    """The upstream value aks_deployment receives (what the bento asset returns)."""
    return BENTO


def aks_resource(**overrides) -> AksResource:
    """The resource ``build_resources`` makes from the settings, with the azure target and
    the given fields on top (the local target stays in force for everything else)."""
    base = build_resources()["aks_target"]
    fields = {name: getattr(base, name) for name in AksResource.model_fields}
    fields.update(
        target="azure",
        registry="spamacr.azurecr.io",
        context_staging="staging",
        context_production="production",
        ingress_host_production="spam.example.org",
        rollout_timeout_s=60,
    )
    fields.update(overrides)
    return AksResource(**fields)


def write_kubeconfig(path: Path, port: int) -> Path:
    path.write_text(
        f"""apiVersion: v1
kind: Config
clusters:
- name: aks
  cluster: {{server: "https://127.0.0.1:{port}", insecure-skip-tls-verify: true}}
contexts:
- name: staging
  context: {{cluster: aks, user: ci, namespace: spam-staging}}
- name: production
  context: {{cluster: aks, user: ci, namespace: spam-production}}
current-context: staging
users:
- name: ci
  user: {{token: test-token}}
"""
    )
    return path
