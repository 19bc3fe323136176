# MONAI Application Package (MAP) image targets; included by the top-level Makefile.
#   make map        build the CPU test image offline with podman (local Debian base, local wheels); first
#                   installs podman, runc and debootstrap when missing (root + apt-get), or names them and stops
#   make map-test   run tests/integration/test_map_image.py against it (--network none, --read-only; also
#                   one run through `monai-deploy run`)
#   make map-run STUDY=DICOM_DIR OUT=OUT_DIR   run the built image with `monai-deploy run` (holoscan-cli
#                   4.2.0) through the docker shim over podman (packaging/docker-shim, packaging/monai_deploy_run.sh)
#   make map-stage  stage build/map_app for `monai-deploy package` (see docs/deploy.md)
#   make map-clean  remove the image and dangling layers from podman's storage (/var/tmp/sacral-map)
# GPU sites build with docker from the same Dockerfile (CUDA base, CUDA torch) or with monai-deploy package.

MAP_NAME ?= sacral-tumour-map
MAP_VERSION ?= $(shell awk '/^application:/{a=1;next} /^[^ #]/{a=0} a && $$1=="version:"{gsub(/["'"'"']/,"",$$2); print $$2; exit}' app/app.yaml)
MAP_IMAGE ?= localhost/$(MAP_NAME):$(MAP_VERSION)-cpu
MAP_BASE_IMAGE ?= localhost/debian-minbase:bookworm
MAP_TORCH_VARIANT ?= cpu
MAP_UID ?= 1000
MAP_WHEELS := build/wheels
# Extra arguments for `pip download` (this machine's pip config already finds the CPU torch wheel;
# elsewhere add: --extra-index-url https://download.pytorch.org/whl/cpu).
MAP_PIP_DOWNLOAD_ARGS ?=
PODMAN ?= podman

.PHONY: map map-deps map-base map-wheels map-test map-run map-stage map-clean map-size
map map-base map-test map-run map-clean map-size: export CONTAINERS_CONF := $(abspath packaging/containers.conf)
map map-base map-test map-run map-clean map-size: export CONTAINERS_STORAGE_CONF := $(abspath packaging/storage.conf)

# System packages (podman, runc, debootstrap): installed when missing and root, else one line naming them.
map-deps:
	@packaging/map_system_deps.sh

map-base: map-deps
	packaging/make_base_image.sh $(MAP_BASE_IMAGE)

# Wheels for the image's Python (the base image's python3 must match the host venv's: 3.11 on bookworm).
map-wheels: $(MAP_WHEELS)/.complete
$(MAP_WHEELS)/.complete: requirements.txt packaging/requirements-map.txt | venv
	rm -rf $(MAP_WHEELS)
	$(PY) -m pip download -q --disable-pip-version-check -c requirements.txt -r packaging/requirements-map.txt \
	    -d $(MAP_WHEELS) $(MAP_PIP_DOWNLOAD_ARGS)
	touch $@

map: map-deps map-base map-wheels
	$(PODMAN) build --pull=never --network none -f Dockerfile \
	    --build-arg BASE_IMAGE=$(MAP_BASE_IMAGE) --build-arg TORCH_VARIANT=$(MAP_TORCH_VARIANT) \
	    --build-arg MAP_VERSION=$(MAP_VERSION) --build-arg UID=$(MAP_UID) --build-arg GID=$(MAP_UID) \
	    -t $(MAP_IMAGE) .
	@$(PODMAN) image inspect $(MAP_IMAGE) --format 'built {{index .RepoTags 0}}: {{.Size}} bytes'

map-size:
	@$(PODMAN) image inspect $(MAP_IMAGE) --format '{{.Size}}'

map-test: map
	MAP_IMAGE=$(MAP_IMAGE) MAP_UID=$(MAP_UID) PODMAN=$(PODMAN) MONAI_DEPLOY=$(abspath $(VENV))/bin/monai-deploy \
	    $(PY) -m pytest -q tests/integration/test_map_image.py

map-run: map-deps | venv
	@test -n "$(STUDY)" && test -n "$(OUT)" || { echo "usage: make map-run STUDY=DICOM_FOLDER OUT=OUTPUT_FOLDER" >&2; exit 2; }
	MAP_UID=$(MAP_UID) MONAI_DEPLOY=$(abspath $(VENV))/bin/monai-deploy packaging/monai_deploy_run.sh $(MAP_IMAGE) $(STUDY) $(OUT)

map-stage:
	packaging/stage_map_app.sh build/map_app

map-clean:
	-$(PODMAN) rmi -f $(MAP_IMAGE)
	-$(PODMAN) image prune -f
