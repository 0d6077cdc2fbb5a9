#!/usr/bin/env bash
# The Dockerfile's two images, built for real where neither Docker nor a registry is at hand: Debian's buildah
# (vfs storage, chroot isolation) builds them from scratch with the static binary the Dockerfile's build stage
# makes, /etc/passwd and /etc/group holding root and nonroot (65532) as distroless has them, Debian's CA roots,
# and the Dockerfile's USER, ENTRYPOINT, EXPOSE and OCI labels (read from the Dockerfile). Then it checks what
# each image runs: its configuration (user, entrypoint, labels) and the binary in the image's root file system as
# the image's user (`--version`, `webhook --check-config`, `katib -h`).
#
#   RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static" \
#     scripts/pgo-build.sh --target x86_64-unknown-linux-gnu      # as the Dockerfile builds it
#   tests/image/buildah.sh target/x86_64-unknown-linux-gnu/release/trialtail [OUT-DIR]
#
# OUT-DIR (default: a new temporary directory) receives trialtail.oci.tar and trialtail-dropin.oci.tar (OCI
# archives: `skopeo copy oci-archive:… docker://…` pushes them). Needs buildah (apt-get install buildah) and root
# or a user namespace.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
BINARY="${1:?usage: tests/image/buildah.sh BINARY [OUT-DIR]}"
OUT="${2:-$(mktemp -d)}"
mkdir -p "$OUT"
VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' "$REPO/Cargo.toml" | head -1)"
REVISION="$(git -C "$REPO" rev-parse HEAD 2>/dev/null || echo unknown)"
CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
export STORAGE_DRIVER=vfs BUILDAH_ISOLATION=chroot

fail() { echo "buildah.sh: $*" >&2; exit 1; }
command -v buildah >/dev/null || fail "buildah is not installed (apt-get install buildah)"
file -L "$BINARY" | grep -q "statically linked" || fail "$BINARY is not a static binary"

# The runtime stage's labels, as `--label KEY=VALUE` arguments with the build arguments filled in.
labels=()
while IFS= read -r kv; do
  kv="${kv//\$\{VERSION\}/$VERSION}"; kv="${kv//\$\{REVISION\}/$REVISION}"; kv="${kv//\$\{CREATED\}/$CREATED}"
  labels+=(--label "$kv")
done < <(sed -e ':a' -e '/\\$/N; s/\\\n//; ta' "$REPO/Dockerfile" \
  | awk '/^FROM .* AS runtime/{on=1; next} /^FROM /{on=0} on && /^LABEL /' \
  | grep -o 'org\.opencontainers\.image\.[a-z.]*="[^"]*"' | sed 's/="\(.*\)"$/=\1/')
[[ ${#labels[@]} -ge 14 ]] || fail "found only ${#labels[@]} label arguments in the Dockerfile"
user_of() { awk -v stage="$1" '/^FROM /{name=($0 ~ / AS /) ? $NF : "default"} name == stage && /^USER /{print $2}' "$REPO/Dockerfile"; }

rootfs="$(mktemp -d)"
trap 'rm -rf "$rootfs"' EXIT
mkdir -p "$rootfs/etc/ssl/certs" "$rootfs/home/nonroot" "$rootfs/tmp"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n' >"$rootfs/etc/group"
cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/" 2>/dev/null || echo "buildah.sh: no CA roots here" >&2
install -m 0755 "$BINARY" "$rootfs/trialtail"
chmod 1777 "$rootfs/tmp"
chown 65532:65532 "$rootfs/home/nonroot"

build() { # NAME USER TITLE
  local ctr
  ctr="$(buildah from scratch)"
  buildah copy "$ctr" "$rootfs" / >/dev/null 2>&1
  buildah config --user "$2" --entrypoint '["/trialtail"]' --port 9478/tcp \
    "${labels[@]}" --label "org.opencontainers.image.title=$3" \
    --label "org.opencontainers.image.base.name=scratch (tests/image/buildah.sh)" "$ctr" >/dev/null
  buildah commit --quiet --format oci "$ctr" "localhost/$1:$VERSION" >/dev/null
  buildah push --quiet "localhost/$1:$VERSION" "oci-archive:$OUT/$1.oci.tar" >/dev/null
  echo "$ctr"
}

# What an image's configuration must say.
CHECK_CONFIG='
import json, sys
cfg = json.load(sys.stdin)["OCIv1"]["config"]
user = sys.argv[1]
assert cfg["User"] == user, cfg["User"]
assert cfg["Entrypoint"] == ["/trialtail"], cfg["Entrypoint"]
assert "9478/tcp" in cfg.get("ExposedPorts", {}), cfg
for key in ("title", "description", "version", "revision", "created", "source", "licenses"):
    assert cfg["Labels"].get("org.opencontainers.image." + key), key
print("  config: user %s, entrypoint %s, %d labels" % (cfg["User"], cfg["Entrypoint"], len(cfg["Labels"])))
'

check() { # CONTAINER IMAGE USER
  local ctr="$1" image="$2" user="$3" cfg mnt
  cfg="$(buildah inspect --type image "$image")"
  python3 -c "$CHECK_CONFIG" "$user" <<<"$cfg" || fail "$image: configuration"
  mnt="$(buildah mount "$ctr")"
  chroot --userspec="$user" "$mnt" /trialtail --version
  chroot --userspec="$user" "$mnt" /trialtail webhook --check-config --cert-secret trialtail-webhook-tls
  chroot --userspec="$user" "$mnt" /trialtail katib -h | head -1
  echo "  ran /trialtail in the image's root file system as $user"
  buildah umount "$ctr" >/dev/null
}

echo "== trialtail (user $(user_of default))"
ctr="$(build trialtail "$(user_of default)" trialtail)"
check "$ctr" "localhost/trialtail:$VERSION" "$(user_of default)"
echo "== trialtail-dropin (user $(user_of dropin))"
ctr="$(build trialtail-dropin "$(user_of dropin)" trialtail-dropin)"
check "$ctr" "localhost/trialtail-dropin:$VERSION" "$(user_of dropin)"
ls -l "$OUT"/*.oci.tar
