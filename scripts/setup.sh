#!/usr/bin/env bash
# Prepares a Debian 12 host for Cella: distro packages, the npm build, then the
# guest artifacts (kernel, initrd, base trees) via `cella setup`. Nothing is
# downloaded except through apt and npm. Safe to rerun.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

say() { printf '==> %s\n' "$*"; }

# Root does the system steps; anyone else goes through sudo for them only.
sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "setup: run as root or install sudo" >&2; exit 1; }
  sudo_cmd=(sudo)
fi

packages=(
  qemu-system-x86 qemu-utils busybox-static nftables iproute2 e2fsprogs
  musl-tools make gcc g++ libnftables-dev python3 mmdebstrap docker-registry libc6-dev lz4 xz-utils zstd gzip bzip2 util-linux procps cpio ca-certificates curl
  clang-format
  libnss-myhostname
  chromium  # the web console's browser tests (puppeteer-core drives it; nothing downloads a browser)
)

say "apt-get update"
"${sudo_cmd[@]}" apt-get update -q
say "installing ${#packages[@]} Debian packages"
"${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${packages[@]}"

# E2B sandboxes are https://<port>-<id>.cella.localhost:7443: myhostname resolves *.localhost to loopback
# for every program (Node does not special-case it). Debian's package adds it to nsswitch.conf; make sure.
if ! grep -Eq '^hosts:.*\bmyhostname\b' /etc/nsswitch.conf; then
  say "adding myhostname to the hosts line of /etc/nsswitch.conf"
  "${sudo_cmd[@]}" sed -i -E 's/^(hosts:.*)$/\1 myhostname/' /etc/nsswitch.conf
fi

# Debian 12 ships Node 18; Cella needs 20+ from wherever the admin installs it.
node_bin="$(command -v node || true)"
if [ -z "$node_bin" ] || ! command -v npm >/dev/null 2>&1; then
  echo "setup: node (>= 20) and npm are required but not on PATH" >&2
  exit 1
fi
node_major="$("$node_bin" -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 20 ]; then
  echo "setup: node >= 20 is required, found $("$node_bin" --version) at $node_bin" >&2
  exit 1
fi

say "npm ci"
npm ci --no-audit --no-fund
say "npm run build"
npm run build

# sudo resets PATH and the environment: call node by its full path and pass the guest dir on.
guest_env=()
if [ -n "${CELLA_GUEST_DIR:-}" ]; then guest_env=("CELLA_GUEST_DIR=$CELLA_GUEST_DIR"); fi
say "building guest artifacts (cella setup)"
"${sudo_cmd[@]}" env "${guest_env[@]}" "$node_bin" bin/cella.js setup "$@"
say "setup complete"
