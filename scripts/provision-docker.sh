#!/usr/bin/env bash
# Makes a Docker engine and the offline sandbox image available, for the Docker tests.
# Debian, as root; idempotent: installs docker.io and debootstrap when absent, starts dockerd in
# the background when no daemon answers, builds the image once (cached by its tag).
# Usage: scripts/provision-docker.sh RLM_EXECUTABLE [IMAGE_TAG]
set -euo pipefail
rlm="$1"
image="${2:-rlm-sandbox:bookworm}"

if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
  echo "provision: installing docker.io and debootstrap"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io debootstrap >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
  echo "provision: starting dockerd (log: /tmp/rlm-dockerd.log)"
  nohup dockerd >/tmp/rlm-dockerd.log 2>&1 &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
  docker info >/dev/null 2>&1 || { echo "provision: dockerd did not start"; tail -20 /tmp/rlm-dockerd.log; exit 1; }
fi

if ! docker image inspect "$image" >/dev/null 2>&1; then
  echo "provision: building $image offline (debootstrap, about a minute or more)"
  "$rlm" sandbox build --tag "$image"
fi
echo "provision: Docker $(docker version --format '{{.Server.Version}}'), image $image ready"
