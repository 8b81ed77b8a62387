"""The AKS canary as Helm release values: start it, read it, move it on.

On AKS a canary is the production release with ``canary.enabled``: a second Deployment with
the challenger image and an NGINX canary Ingress sending ``canary.weight`` percent of requests
to it. The release's values hold the whole state (both images, the weight, when the canary and
its stage started), so every stage change is an upgrade of the release with new values,
through the same path as ``aks_deployment`` (render + validate, ``upgrade --install --wait``
with rollback on failure), and Helm's release history is the audit trail of the rollout.

Pure functions over values; the cluster calls are in :mod:`spam_assets.lib.aks`.
"""

from __future__ import annotations

import copy
import re
from datetime import datetime
from typing import Any

from spam_assets.lib.aks import ImageSpec, release_values
from spam_assets.lib.canary import CanaryDecision, RunningCanary
from spam_serving.settings import SpamSettings

#: The tag :meth:`ImageSpec.for_bento` gives an image: ``v<model version>-<code hash>``.
_TAG = re.compile(r"^v(?P<version>[0-9]+)-[0-9a-f]{1,8}$")


def version_of(image: dict[str, Any], key: str) -> str:
    """The model version an image of this project carries (from its tag)."""
    match = _TAG.match(str(image.get("tag") or ""))
    if match is None:
        raise ValueError(
            f"{key}.tag {image.get('tag')!r} is not an image of aks_deployment "
            "(v<model version>-<code hash>): cannot tell which model it serves"
        )
    return match["version"]


def weight_of(fraction: float) -> int:
    """The ingress weight (integer percent) of a canary stage."""
    return round(fraction * 100)


def _when(canary: dict[str, Any], key: str) -> datetime:
    try:
        when = datetime.fromisoformat(str(canary.get(key) or ""))
    except ValueError:
        raise ValueError(
            f"canary.{key} {canary.get(key)!r} is not an ISO 8601 time: start canaries with "
            "aks_deployment (strategy canary), which records it"
        ) from None
    if when.tzinfo is None:
        raise ValueError(f"canary.{key} {canary.get(key)!r} has no time zone")
    return when


def read_canary(values: dict[str, Any]) -> RunningCanary | None:
    """The canary the release runs, or None. Values that claim a canary but do not say
    which models or since when raise :class:`ValueError` naming the key (judging it blind
    would compare the wrong traffic)."""
    canary = values.get("canary") or {}
    if not canary.get("enabled"):
        return None
    started = _when(canary, "startedAt")
    stage = _when(canary, "stageStartedAt") if canary.get("stageStartedAt") else started
    return RunningCanary(
        champion=version_of(values.get("image") or {}, "image"),
        challenger=version_of(canary.get("image") or {}, "canary.image"),
        fraction=int(canary.get("weight", 0)) / 100,
        started_at=started,
        stage_started_at=stage,
    )


def stable_image(values: dict[str, Any]) -> ImageSpec:
    """The image the release's stable Deployment runs."""
    image = values.get("image") or {}
    registry, _, repository = str(image.get("repository", "")).partition("/")
    return ImageSpec(
        registry=registry,
        repository=repository,
        tag=str(image.get("tag", "")),
        digest=image.get("digest") or None,
    )


def start_values(
    settings: SpamSettings,
    current: dict[str, Any],
    challenger: ImageSpec,
    fraction: float,
    now: datetime,
) -> dict[str, Any]:
    """Production's values with ``challenger`` as a canary at ``fraction`` beside the image
    production runs now (``current``: the release's values). A canary already running is an
    error: one challenger at a time, so the judge knows what it compares."""
    running = read_canary(current)
    if running is not None:
        raise ValueError(
            f"a canary (v{running.challenger} at {running.fraction:.0%}) is already "
            "running: let canary_rollout promote or roll it back first"
        )
    stable = stable_image(current)
    if version_of(challenger.values(), "canary.image") == version_of(stable.values(), "image"):
        raise ValueError(f"production already runs model v{version_of(stable.values(), 'image')}")
    values = release_values(
        settings, "production", stable, canary=challenger, canary_weight=weight_of(fraction)
    )
    values["canary"].update(startedAt=now.isoformat(), stageStartedAt=now.isoformat())
    return values


def next_values(
    values: dict[str, Any], decision: CanaryDecision, now: datetime
) -> dict[str, Any] | None:
    """The release's values after ``decision``, or None when nothing changes (hold).

    advance: the weight of the next stage, the stage clock restarted; promote: the stable
    Deployment takes the challenger image (tag and digest) and the canary goes; rollback:
    the canary goes and the stable image stays, so all traffic is the champion's again, as
    before the canary started."""
    if decision.action == "hold":
        return None
    out = copy.deepcopy(values)
    canary = out.setdefault("canary", {})
    if decision.action == "advance":
        canary.update(weight=weight_of(decision.next_fraction), stageStartedAt=now.isoformat())
        return out
    if decision.action == "promote":
        out["image"] = {
            **out.get("image", {}),
            "tag": canary["image"]["tag"],
            "digest": canary["image"].get("digest", ""),
        }
    elif decision.action != "rollback":
        raise ValueError(f"unknown canary action {decision.action!r}")
    out["canary"] = {"enabled": False}
    return out
