#!/usr/bin/env bash
# The system commands `make map` needs, and the Debian/Ubuntu packages that provide them:
#   podman       builds and runs the image (rootful; its build engine is built in, no buildah command needed)
#   runc         the OCI runtime packaging/containers.conf selects (crun, podman's default, refuses the
#                cgroups of the development machines)
#   debootstrap  makes the local base image (packaging/make_base_image.sh)
# Checks the commands on PATH. When some are missing: as root with apt-get, installs them (quietly, no
# recommended packages); otherwise stops with one line that names the packages and the command to run.
# Usage: packaging/map_system_deps.sh        (called by `make map`; prints nothing when all is there)
set -euo pipefail

CMDS=(podman runc debootstrap)
PKGS=(podman runc debootstrap)

missing_pkgs() {
    local i
    for i in "${!CMDS[@]}"; do
        command -v "${CMDS[$i]}" >/dev/null 2>&1 || printf '%s\n' "${PKGS[$i]}"
    done
}

mapfile -t missing < <(missing_pkgs)
((${#missing[@]} == 0)) && exit 0

install_cmd="apt-get install -y --no-install-recommends ${missing[*]}"
if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    echo "make map: missing system packages ${missing[*]}; install them first (as root): $install_cmd" >&2
    exit 1
fi

echo "make map: installing system packages ${missing[*]} ($install_cmd)"
export DEBIAN_FRONTEND=noninteractive
# A fresh machine may have no package lists yet; refresh them only when the install cannot find a package.
if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1; then
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

mapfile -t still < <(missing_pkgs)
if ((${#still[@]})); then
    echo "make map: ${still[*]} still not on PATH after installing; check PATH (/usr/sbin) and the apt output" >&2
    exit 1
fi
