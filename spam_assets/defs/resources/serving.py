"""The local Bento deployment."""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar

from spam_assets.defs.resources.slice import SettingsSlice, Source


class ServingResource(SettingsSlice):
    """Where and how the local Bento deployment runs."""

    SOURCES: ClassVar[dict[str, Source]] = {
        "spam_home": "home",
        "host": "serve_host",
        "port": "serve_port",
        "workers": "serve_workers",
        "api_keys_file": lambda s: s.api_keys_file or s.default_api_keys_file,
        "startup_timeout_s": lambda s: 120.0,
    }

    spam_home: str
    bentoml_home: str
    host: str
    port: int
    workers: int
    api_keys_file: str
    startup_timeout_s: float

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def state_dir(self) -> Path:
        return Path(self.spam_home) / "serving"

    @property
    def alias_file(self) -> Path:
        return self.state_dir / "aliases.json"

    def ensure_api_key(self) -> str:
        """The first key of the key file, creating the file (mode 600) on first use."""
        import secrets

        path = Path(self.api_keys_file)
        if path.is_file():
            for line in path.read_text().splitlines():
                if line.strip() and not line.startswith("#"):
                    return line.strip()
        path.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(32)
        path.write_text(f"# API keys of the local deployment, one per line\n{key}\n")
        path.chmod(0o600)
        return key

    def process_env(self) -> dict[str, str]:
        """Environment of the ``bentoml serve`` process and of the build helper."""
        return {
            **os.environ,
            "SPAM_HOME": self.spam_home,
            "BENTOML_HOME": self.bentoml_home,
            "SPAM_API_KEYS_FILE": self.api_keys_file,
            "SPAM_SERVE_WORKERS": str(self.workers),
            "BENTOML_DO_NOT_TRACK": "true",
        }
