#!/usr/bin/env bash
# Run the MAP with the official runner, `monai-deploy run` (holoscan-cli 4.2.0), on a host with podman and no
# Docker (the development machines), through the `docker` shim in packaging/docker-shim/.
# Usage: packaging/monai_deploy_run.sh IMAGE STUDY_DIR OUT_DIR      (make map-run STUDY=... OUT=...)
# Environment: MONAI_DEPLOY (default: monai-deploy of .venv), MAP_UID (default 1000), MAP_RUN_HOME (default
# build/map-run-home), CONTAINERS_CONF / CONTAINERS_STORAGE_CONF (default: packaging/*.conf).
# Exit status: 0 when the application exited 0; the runner answers 2 for any failure of the application.
#
# What the runner needs here besides the shim (each passed below):
#   - a `docker-buildx` CLI plugin file: the runner refuses to start without one, though `run` never uses
#     buildx. A stub in a private HOME ($MAP_RUN_HOME/.docker/cli-plugins), not in the user's.
#   - --network podman: the runner's default network is `host`, which it looks up with `docker network ls`;
#     podman lists no network of that name, and creating one fails. `podman` is podman's default bridge.
#   - --gpus void: without it the runner counts GPUs with nvidia-smi (none here) against pkg.json's 1 GPU and
#     stops; `void` tells the NVIDIA runtime to expose none (the image falls back to the CPU).
#   - --uid/--gid MAP_UID: the runner's default is the caller's uid (root here); the image is built for the
#     user `holoscan` (uid 1000). OUT is created and, when run as root, owned by that uid, as plain
#     `docker run`/`podman run` need too.
#   - --shm-size config: /dev/shm of pkg.json's sharedMemory (1 GiB) instead of --ipc=host.
set -euo pipefail
if (($# != 3)); then
    echo "usage: $0 IMAGE STUDY_DIR OUT_DIR" >&2
    exit 2
fi
IMAGE="$1"
STUDY="$(realpath "$2")"
OUT="$3"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
MAP_UID="${MAP_UID:-1000}"
MONAI_DEPLOY="${MONAI_DEPLOY:-$ROOT/.venv/bin/monai-deploy}"
RUN_HOME="$(realpath -m "${MAP_RUN_HOME:-$ROOT/build/map-run-home}")"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$ROOT/packaging/containers.conf}"
export CONTAINERS_STORAGE_CONF="${CONTAINERS_STORAGE_CONF:-$ROOT/packaging/storage.conf}"

[[ -d "$STUDY" ]] || { echo "$0: no study folder $2" >&2; exit 2; }
if ! podman image exists "$IMAGE"; then
    echo "$0: image $IMAGE not found: build it with make map" >&2
    exit 2
fi
mkdir -p "$OUT"
OUT="$(realpath "$OUT")"
if [[ $(id -u) -eq 0 ]]; then
    chown "$MAP_UID:$MAP_UID" "$OUT"
fi

mkdir -p "$RUN_HOME/.docker/cli-plugins"
ln -sfn "$ROOT/packaging/docker-shim/docker-buildx" "$RUN_HOME/.docker/cli-plugins/docker-buildx"

export HOME="$RUN_HOME"
export PATH="$ROOT/packaging/docker-shim:$PATH"
exec "$MONAI_DEPLOY" run "$IMAGE" -i "$STUDY" -o "$OUT" --rm \
    --network podman --gpus void --uid "$MAP_UID" --gid "$MAP_UID" --shm-size config
