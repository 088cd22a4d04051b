# taas image: one image for the API, the Celery workers (cpu and gpu queues),
# the Alembic migrations and the MLflow tracking server.
# Needs BuildKit (the default builder of Docker >= 23 and of `docker compose build`).
#
# Build arguments:
#   TORCH_INDEX_URL  where torch comes from: PyTorch's CPU-only index by default (no CUDA
#                    libraries, a far smaller image); "" takes PyPI's build, which brings
#                    CUDA (the GPU worker, see docker-compose.yml).
#   PIP_FIND_LINKS   extra wheel locations (a directory URL), e.g. a local torch wheel.
ARG PYTHON_IMAGE=python:3.11-slim

# --- build: a virtualenv with torch and taas, copied whole into the runtime stage -------
FROM ${PYTHON_IMAGE} AS build
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG PIP_FIND_LINKS=""
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/taas/bin:$PATH
RUN python -m venv /opt/taas
# torch first, in a layer of its own: by far the largest dependency, and it changes
# rarely, so editing the sources does not download it again.
RUN pip install ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} torch==2.13.0
# The project's dependencies, read from pyproject.toml alone: this layer is rebuilt only
# when they change, not on every edit of the sources.
RUN --mount=type=bind,source=pyproject.toml,target=/tmp/pyproject.toml \
    python -c "import tomllib; print('\n'.join(tomllib.load(open('/tmp/pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt
# The project (non-editable). The build context is bind-mounted rather than copied: only
# the installed package ends up in the image; `rw` lets the build backend write scratch files.
RUN --mount=type=bind,target=/src,rw \
    pip install --no-deps /src

# --- runtime: no compiler, no pip cache, no build context -------------------------------
FROM ${PYTHON_IMAGE}
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/taas/bin:$PATH
COPY --from=build /opt/taas /opt/taas

WORKDIR /app
COPY alembic.ini ./
COPY migrations ./migrations

# Non-root user. /data (shared job data) and /mlartifacts (MLflow artifacts) are
# created here and owned by it, so named volumes mounted there start out writable.
RUN useradd --create-home --uid 10001 --user-group taas \
    && mkdir -p /data /mlartifacts \
    && chown taas:taas /data /mlartifacts
USER 10001:10001

# SIGTERM is a warm shutdown for Celery (no new job; the running one may finish within the
# stop grace period, or is killed and resumed from its checkpoint by the next worker) and a
# graceful one for uvicorn; compose gives each a stop grace period.
STOPSIGNAL SIGTERM
EXPOSE 8000
# Liveness of the default command (the API). Compose sets each service's own check.
HEALTHCHECK --interval=10s --timeout=10s --start-period=30s --retries=5 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=5)"]
CMD ["uvicorn", "api.main:app", "--host", "0.0.0.0", "--port", "8000"]
