# syntax=docker/dockerfile:1
# (RUN --mount needs BuildKit: Docker >= 23 / docker buildx, or podman/buildah.)
# MONAI Application Package (MAP spec 1.0.0) for the sacral-tumour application.
#
# Layout (as holoscan-cli 4.2.0 lays out its images):
#   /opt/holoscan/app/{__main__.py,app/,operators/,core/}   application (command: python3 /opt/holoscan/app)
#   /opt/holoscan/models/<name>/{model.ts,metadata.json}     models
#   /opt/holoscan/docs/                                      documentation
#   /etc/holoscan/{app.json,pkg.json}                        manifests
#   /var/holoscan/app.yaml                                   application configuration
#   /var/holoscan/{input,output}/                            mount points
#   /var/holoscan/tools                                      entrypoint: run | show | env | extract | help
#   /opt/holoscan/venv                                       Python environment
#
# Build arguments:
#   BASE_IMAGE     default: CUDA 13.0 runtime on Ubuntu 24.04, the base holoscan-cli 4.2.0 uses (GPU hosts need
#                  an NVIDIA driver >= 580). Any Debian/Ubuntu image with python3 + venv, or apt access, works;
#                  the offline test build uses localhost/debian-minbase:bookworm (mk/map.mk).
#   TORCH_VARIANT  cuda (default: PyPI's torch, the CUDA 13 build) | cpu (CPU wheel).
#   Packages: packaging/requirements-map.txt (runtime only) at the versions pinned in requirements.txt.
#   If the build context holds build/wheels/*.whl, pip installs ONLY from them (--no-index, works with
#   --network none; they must match the base image's Python). Otherwise pip uses the network.
#   MAP_VERSION    must equal app/app.yaml application.version (tests/test_manifests.py checks the default).
#   UID, GID       of the non-root user `holoscan` the container runs as.
#
# Run time: the image works with --network none, a read-only input mount and --read-only root file system,
# provided /tmp is writable (--tmpfs /tmp; caches of cupy, matplotlib, torch go there) and the output
# folder is writable by UID. Holoscan wants a 32 MiB stack: --ulimit stack=33554432:33554432.

ARG BASE_IMAGE=nvcr.io/nvidia/cuda:13.0.0-runtime-ubuntu24.04

########################################################################################################
# Requirements (+ the offline wheels, when present), bind-mounted into the pip step below: nothing of them
# stays in the image, and an unchanged context costs no rebuild.
FROM scratch AS pip-inputs
# requirements.txt always exists, so this COPY succeeds also when build/wheels/ is absent.
COPY requirements.txt packaging/requirements-map.txt build/wheel[s] /pip/

########################################################################################################
FROM ${BASE_IMAGE} AS release
ARG TORCH_VARIANT=cuda
ARG MAP_VERSION=0.1.0
ARG UID=1000
ARG GID=1000
ARG UNAME=holoscan
ARG BASE_IMAGE
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

RUN if ! python3 -c "import ensurepip, venv" 2>/dev/null; then \
        apt-get update \
        && apt-get install -y --no-install-recommends python3 python3-venv \
        && rm -rf /var/lib/apt/lists/*; \
    fi

# The pins also go into the image (and make this layer's cache depend on them with every builder).
COPY requirements.txt packaging/requirements-map.txt /opt/holoscan/
RUN --mount=type=bind,from=pip-inputs,source=/pip,target=/tmp/pip \
    set -eu; \
    cd /tmp/pip; \
    python3 -m venv /opt/holoscan/venv; \
    PIP=/opt/holoscan/venv/bin/pip; \
    if ls ./*.whl >/dev/null 2>&1; then \
        echo "installing from the wheels in the build context (no index)"; \
        SRC="--no-index --find-links /tmp/pip"; \
    else \
        SRC=""; \
        if [ "$TORCH_VARIANT" = cpu ]; then \
            $PIP install "$(grep -E '^torch==' requirements.txt)" --index-url https://download.pytorch.org/whl/cpu; \
        fi; \
    fi; \
    $PIP install $SRC -c requirements.txt -r requirements-map.txt; \
    /opt/holoscan/venv/bin/python -c "import sys, torch; cuda = torch.version.cuda; print('torch', torch.__version__, 'cuda', cuda); sys.exit(0 if (cuda is None) == (sys.argv[1] == 'cpu') else 'torch variant does not match TORCH_VARIANT=' + sys.argv[1])" "$TORCH_VARIANT"; \
    mkdir -p /opt/holoscan/lib; \
    lib=$(ls /opt/holoscan/venv/lib/python3*/site-packages/nvidia/cu13/lib/libcudart.so.13 2>/dev/null | head -n1); \
    if [ -n "$lib" ]; then ln -sf "$lib" /opt/holoscan/lib/libcudart.so.13; fi

LABEL org.opencontainers.image.title="Sacral Tumour Classification from Noncontrast Pelvic CT" \
      org.opencontainers.image.version="${MAP_VERSION}" \
      org.opencontainers.image.description="MONAI Application Package: segments the hip bones and a sacral tumour on a noncontrast pelvic CT, locates the tumour in a hip-bone frame, classifies it into six types; writes DICOM SEG, TID 1500 SR and result.json. Research use only." \
      org.opencontainers.image.vendor="Sacral Tumour MAP project" \
      org.opencontainers.image.licenses="NOASSERTION" \
      org.opencontainers.image.base.name="${BASE_IMAGE}" \
      org.monai.deploy.app-sdk="4.0.0" \
      org.nvidia.holoscan="4.2.0"

ENV HOLOSCAN_APPLICATION=/opt/holoscan/app \
    HOLOSCAN_INPUT_PATH=/var/holoscan/input \
    HOLOSCAN_OUTPUT_PATH=/var/holoscan/output \
    HOLOSCAN_WORKDIR=/var/holoscan \
    HOLOSCAN_MODEL_PATH=/opt/holoscan/models \
    HOLOSCAN_CONFIG_PATH=/var/holoscan/app.yaml \
    HOLOSCAN_APP_MANIFEST_PATH=/etc/holoscan/app.json \
    HOLOSCAN_PKG_MANIFEST_PATH=/etc/holoscan/pkg.json \
    HOLOSCAN_DOCS_PATH=/opt/holoscan/docs \
    HOLOSCAN_LOGS_PATH=/var/holoscan/logs \
    HOLOSCAN_TIMEOUT=600 \
    PATH=/opt/holoscan/venv/bin:${PATH} \
    LD_LIBRARY_PATH=/opt/holoscan/lib${LD_LIBRARY_PATH:+:${LD_LIBRARY_PATH}} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    XDG_CACHE_HOME=/tmp/.cache \
    MPLCONFIGDIR=/tmp/.matplotlib \
    CUPY_CACHE_DIR=/tmp/.cupy

# Non-root user (Ubuntu images ship `ubuntu` with uid 1000: drop it, as holoscan-cli does).
RUN if id ubuntu >/dev/null 2>&1; then userdel -r ubuntu 2>/dev/null || userdel ubuntu; fi; \
    groupadd -f -g "${GID}" "${UNAME}" \
    && useradd -m -u "${UID}" -g "${GID}" -s /bin/bash "${UNAME}" \
    && mkdir -p /etc/holoscan /opt/holoscan/app /opt/holoscan/models /opt/holoscan/docs \
                /var/holoscan/input /var/holoscan/output /var/holoscan/logs /var/run/holoscan/export \
    && chown "${UNAME}:${GID}" /var/holoscan/input /var/holoscan/output /var/holoscan/logs

COPY packaging/tools /var/holoscan/tools
COPY MAP_manifest/app.json MAP_manifest/pkg.json /etc/holoscan/
COPY app/app.yaml /var/holoscan/app.yaml
COPY docs /opt/holoscan/docs
COPY models /opt/holoscan/models
# The model card belongs with the docs: a plain file in the models folder would not be a model.
RUN mv /opt/holoscan/models/README.md /opt/holoscan/docs/model_card.md
COPY packaging/map_main.py /opt/holoscan/app/__main__.py
COPY core /opt/holoscan/app/core
COPY operators /opt/holoscan/app/operators
COPY app /opt/holoscan/app/app
RUN chmod 0755 /var/holoscan/tools \
    && python3 -m compileall -q /opt/holoscan/app

WORKDIR /var/holoscan
USER ${UNAME}
ENTRYPOINT ["/var/holoscan/tools"]
