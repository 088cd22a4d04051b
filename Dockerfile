# taas image: one image for the API, the Celery workers (cpu and gpu queues),
# the Alembic migrations and the MLflow tracking server.
# Needs BuildKit (the default builder of Docker >= 23 and of `docker compose build`).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# libpq for psycopg should it run without its binary wheel (psycopg[binary] needs none).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libpq5 \
    && rm -rf /var/lib/apt/lists/*

# torch first, in a layer of its own: it is by far the largest dependency and
# changes rarely, so editing the sources does not download it again.
RUN pip install torch==2.13.0

# The project itself (a non-editable install needs the sources, so this layer
# is rebuilt whenever they change). The build context is bind-mounted rather
# than copied: only the installed package ends up in the image.
# `rw` lets the build backend write its scratch files; they are discarded.
RUN --mount=type=bind,target=/src,rw \
    pip install /src

WORKDIR /app
COPY alembic.ini ./
COPY migrations ./migrations

# Non-root user. /data (shared job data) and /mlartifacts (MLflow artifacts) are
# created here and owned by it, so named volumes mounted there start out writable.
RUN useradd --create-home --uid 10001 --user-group taas \
    && mkdir -p /data /mlartifacts \
    && chown taas:taas /data /mlartifacts
USER 10001:10001

EXPOSE 8000
CMD ["uvicorn", "api.main:app", "--host", "0.0.0.0", "--port", "8000"]
