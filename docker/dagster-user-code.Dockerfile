# The Dagster user-code image (code location spam_assets.definitions) for AKS: the project
# installed from uv.lock without dev tools, run as a non-root user. Build context: repo root.
#   az acr build -r <acr> -t spam-mlops-dagster:<git sha> -f docker/dagster-user-code.Dockerfile .
FROM python:3.11-slim-bookworm
COPY --from=ghcr.io/astral-sh/uv:0.9 /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PROJECT_ENVIRONMENT=/opt/venv \
    PATH=/opt/venv/bin:$PATH SPAM_TARGET=azure SPAM_HOME=/spam-home
WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY spam_assets spam_assets
COPY spam_serving spam_serving
COPY bentofile.yaml workspace.yaml ./
COPY helm helm
RUN uv sync --frozen --no-dev && useradd -u 10001 -m spam && mkdir -p /spam-home && chown spam /spam-home
# the Azure CLI for aks_deployment's `az acr build`, in its own venv (its pins are its own)
RUN uv venv /opt/az && VIRTUAL_ENV=/opt/az uv pip install --no-cache azure-cli==2.91.0 \
    && ln -s /opt/az/bin/az /usr/local/bin/az
USER 10001
EXPOSE 3030
HEALTHCHECK --interval=30s --timeout=5s CMD ["dagster", "api", "grpc-health-check", "-p", "3030"]
CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "3030", "-m", "spam_assets.definitions"]
