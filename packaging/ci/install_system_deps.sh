#!/usr/bin/env bash
# System (Debian) packages the test suite needs: chromium (report rendering), pixelmed-apps (SR validator),
# a real PACS (Orthanc + DICOMweb plugin) for
# tests/integration, dicom3tools (dciodvfy/dcentvfy) and iproute2/util-linux (ip, unshare) for the
# network namespace Orthanc runs in. Idempotent and quiet: does nothing when everything is installed.
# Must run as root (CI and developer machines are root). Never leaves an Orthanc service running.
set -euo pipefail

PKGS=(orthanc orthanc-dicomweb dicom3tools pixelmed-apps chromium strace iproute2 util-linux)

missing=()
for p in "${PKGS[@]}"; do
    # "install ok installed" only; half-configured or removed-with-config counts as missing
    if [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)" != "install ok installed" ]]; then
        missing+=("$p")
    fi
done

if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "install_system_deps.sh: need root to install: ${missing[*]}" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    # Keep Debian's orthanc service from starting during install (it would bind 4242/8042 on all
    # interfaces). Docker-style images already ship a policy-rc.d that denies; add one only if absent.
    created_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        created_policy=1
    fi
    trap '[[ $created_policy -eq 1 ]] && rm -f /usr/sbin/policy-rc.d' EXIT
    echo "install_system_deps.sh: installing ${missing[*]}"
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# If a service manager started Orthanc anyway (or an earlier install did), stop and disable it:
# the tests start their own instance inside a private network namespace.
if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
    systemctl disable --now orthanc >/dev/null 2>&1 || true
elif [[ -x /etc/init.d/orthanc ]] && [[ -f /var/run/orthanc.pid || -f /run/orthanc/orthanc.pid ]]; then
    /etc/init.d/orthanc stop >/dev/null 2>&1 || true
fi

command -v Orthanc >/dev/null || { echo "install_system_deps.sh: Orthanc not on PATH after install" >&2; exit 1; }
