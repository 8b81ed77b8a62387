"""The AKS deployment target."""

from __future__ import annotations

from typing import ClassVar

from spam_assets.defs.resources.slice import SettingsSlice, Source


class AksResource(SettingsSlice):
    """The AKS deployment target (``SPAM_TARGET=azure``): registry, clusters, identity
    (settings ``SPAM_AKS_*``), handed to ``spam_assets.lib.aks`` through ``settings()``."""

    PREFIX: ClassVar[str] = "aks_"
    SOURCES: ClassVar[dict[str, Source]] = {"target": "target"}

    target: str
    registry: str | None
    image_repository: str
    image_builder: str
    kubeconfig: str | None
    context_staging: str | None
    context_production: str | None
    namespace_staging: str
    namespace_production: str
    release_prefix: str
    workload_identity_client_id: str | None
    key_vault_name: str | None
    ingress_host_staging: str | None
    ingress_host_production: str | None
    production_approval: str
    rollout_timeout_s: int
