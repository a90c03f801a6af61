#!/usr/bin/env bash
# Builds the modeltrust image from the repository's Dockerfile, unchanged, and caches it by
# the content of its build context.
#
#   hack/build-image.sh            build unless an image of this exact context exists
#   hack/build-image.sh --force    build even so
#
# Builder: Docker when a Docker engine answers, otherwise buildah with no daemon and no
# privileges beyond root's (chroot isolation, vfs storage, a private storage root under
# $MODELTRUST_CACHE). buildah never pulls during the build: the base image is
#   - $PYTHON_IMAGE when set (it must already be in buildah's storage, or be pullable),
#   - else python:3.11-slim-bookworm (the Dockerfile's default) if present or pullable,
#   - else a local stand-in made with mmdebstrap: Debian bookworm with python3, python3-venv,
#     python3-pip and ca-certificates (what the official image provides, in /usr instead of
#     /usr/local). Once made it is reused; delete it (see the end of the output) to retry
#     the upstream image.
#
# The builder stage downloads wheels from PyPI. Where that needs a certificate authority
# that only the host trusts, the host's bundle ($MODELTRUST_BUILD_CA, default
# /etc/ssl/certs/ca-certificates.crt) is given to that RUN step as a build secret: it is
# mounted for the step only and never written into a layer, so the shipped image keeps its
# base image's CA bundle.
#
# Tags: modeltrust:<chart appVersion> (what charts/modeltrust uses by default) and
# modeltrust:ctx-<hash>, the hash of the Dockerfile, the build context and the base image.
# The image is also written as a docker-archive that `ctr -n k8s.io images import` and
# `docker load` accept, named for the same tag. The last lines on stdout are KEY=value
# (IMAGE, IMAGE_ID, ARCHIVE, ...) for scripts; everything else goes to stderr.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

cache=${MODELTRUST_CACHE:-$HOME/.cache/modeltrust}
image_cache="$cache/image"
build_ca=${MODELTRUST_BUILD_CA:-/etc/ssl/certs/ca-certificates.crt}
upstream_base=python:3.11-slim-bookworm
standin_base=localhost/modeltrust-base:python3.11-bookworm
force=0

case ${1:-} in
  --force) force=1 ;;
  "") ;;
  *) echo "usage: $0 [--force]" >&2; exit 2 ;;
esac

log() { printf '[build-image] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

app_version=$(sed -n 's/^appVersion: "\(.*\)"/\1/p' charts/modeltrust/Chart.yaml)
[[ -n $app_version ]] || die "no appVersion in charts/modeltrust/Chart.yaml"
name=modeltrust
tag=$app_version

# ---------------------------------------------------------------------------------------------
# builder
if [[ -n ${MODELTRUST_IMAGE_BUILDER:-} ]]; then
  builder=$MODELTRUST_IMAGE_BUILDER
elif command -v docker >/dev/null && timeout 20 docker info >/dev/null 2>&1; then
  builder=docker
else
  builder=buildah
fi
case $builder in
  docker | buildah) ;;
  *) die "MODELTRUST_IMAGE_BUILDER must be docker or buildah, not $builder" ;;
esac
command -v "$builder" >/dev/null || die "$builder is not installed (Debian: apt-get install $builder)"

storage_root="$cache/buildah/storage"
bah() {
  buildah --root "$storage_root" --runroot "$cache/buildah/run" --storage-driver vfs "$@"
}
image_exists() {
  if [[ $builder == docker ]]; then
    docker image inspect "$1" >/dev/null 2>&1
  else
    bah inspect --type image "$1" >/dev/null 2>&1
  fi
}
image_id() {
  if [[ $builder == docker ]]; then
    docker image inspect --format '{{.Id}}' "$1"
  else
    bah inspect --type image --format '{{.FromImageID}}' "$1"
  fi
}

# ---------------------------------------------------------------------------------------------
# base image
build_standin() {
  command -v mmdebstrap >/dev/null || die "no base image and no mmdebstrap to make one (apt-get install mmdebstrap)"
  local work start rootfs ctr
  start=$SECONDS
  work=$(mktemp -d "$cache/base.XXXXXX")
  rootfs="$work/rootfs.tar"
  log "making the stand-in base image $standin_base with mmdebstrap (about a minute)"
  # Documentation, man pages and locales are left out, as in the official slim images.
  mmdebstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    bookworm "$rootfs" \
    "deb http://deb.debian.org/debian bookworm main" \
    "deb http://deb.debian.org/debian bookworm-updates main" \
    "deb http://deb.debian.org/debian-security bookworm-security main" >&2
  ctr=$(bah from scratch)
  bah add "$ctr" "$rootfs" / >/dev/null
  bah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 --cmd python3 \
    --label org.opencontainers.image.description="modeltrust stand-in for $upstream_base: Debian bookworm python3 from mmdebstrap" \
    "$ctr"
  bah commit --quiet --rm "$ctr" "$standin_base" >/dev/null
  rm -rf "$work"
  log "stand-in base image made in $((SECONDS - start)) s"
}

resolve_base() {
  if [[ -n ${PYTHON_IMAGE:-} ]]; then
    base=$PYTHON_IMAGE
    if [[ $builder == buildah ]] && ! image_exists "$base"; then
      bah pull "$base" >&2 || die "PYTHON_IMAGE=$base is not in buildah's storage and cannot be pulled"
    fi
    return
  fi
  if [[ $builder == docker ]]; then
    base=$upstream_base  # Docker pulls it (or uses its own copy)
    return
  fi
  if image_exists "$upstream_base"; then
    base=$upstream_base
  elif image_exists "$standin_base"; then
    base=$standin_base
  elif timeout 90 buildah --root "$storage_root" --runroot "$cache/buildah/run" --storage-driver vfs \
      pull --quiet "docker.io/library/$upstream_base" >/dev/null 2>&1; then
    base=$upstream_base
  else
    log "$upstream_base cannot be pulled from here"
    build_standin
    base=$standin_base
  fi
}

# ---------------------------------------------------------------------------------------------
# content hash: what the build reads. The context is .dockerignore's allow-list; the same
# generated files it excludes are left out here.
context_paths() {
  sed -n 's/^!\(.*\)$/\1/p' .dockerignore | sed 's#/$##'
}

context_hash() {
  local base_id=$1
  {
    printf 'builder %s\nbase %s %s\n' "$builder" "$base" "$base_id"
    sha256sum Dockerfile .dockerignore
    # shellcheck disable=SC2046  # word splitting of the path list is intended
    find $(context_paths) \
      \( -name __pycache__ -o -name '.*_cache' -o -name '*.egg-info' -o -name build -o -name dist \) -prune \
      -o -type f ! -name '*.pyc' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
  } | sha256sum | cut -c1-16
}

# ---------------------------------------------------------------------------------------------
mkdir -p "$image_cache"
# One build at a time per cache (tests and the real-node harness may call this concurrently).
exec 9>"$image_cache/.lock"
flock 9
resolve_base
base_id=""
if [[ $builder == buildah ]] || image_exists "$base"; then
  base_id=$(image_id "$base")
fi
hash=$(context_hash "$base_id")
hash_tag="ctx-$hash"
archive="$image_cache/$name-$tag-$hash.tar"
latest="$image_cache/$name-$tag.tar"  # a symlink to the newest archive

if ((force == 0)) && image_exists "$name:$hash_tag" && [[ -s $archive ]]; then
  log "up to date: $name:$hash_tag (nothing in the build context changed)"
else
  start=$SECONDS
  log "building $name:$tag with $builder from base $base (context $hash)"
  secret=()
  if [[ -r $build_ca ]]; then
    secret=(--secret "id=build-ca,src=$build_ca")
  fi
  if [[ $builder == docker ]]; then
    DOCKER_BUILDKIT=1 docker build "${secret[@]}" --build-arg "PYTHON_IMAGE=$base" \
      --tag "$name:$tag" --tag "$name:$hash_tag" . >&2
    docker save --output "$archive.tmp" "$name:$tag"
  else
    bah bud --isolation chroot --pull=never --layers=false "${secret[@]}" \
      --build-arg "PYTHON_IMAGE=$base" --tag "$name:$tag" --tag "$name:$hash_tag" . >&2
    rm -f "$archive.tmp"
    bah push --quiet "$name:$hash_tag" "docker-archive:$archive.tmp:$name:$tag" >&2
  fi
  mv "$archive.tmp" "$archive"
  log "built in $((SECONDS - start)) s"
  # Only the newest few builds are kept (each archive and each vfs copy is hundreds of MB),
  # not only the newest one: two checkouts (or a test run beside a CI run) that build in
  # turn would otherwise delete the image the other one is about to use.
  keep=3
  mapfile -t archives < <(ls -t "$image_cache/$name-$tag-"*.tar 2>/dev/null)
  for old in "${archives[@]:$keep}"; do
    [[ $old == "$archive" ]] || rm -f "$old"
  done
  if [[ $builder == buildah ]]; then
    for old in $(bah images --format '{{.Name}}:{{.Tag}}'); do
      [[ $old == */$name:ctx-* ]] || continue
      [[ -e $image_cache/$name-$tag-${old##*:ctx-}.tar ]] && continue  # still kept
      bah rmi "$old" >/dev/null 2>&1 || true
    done
    bah rmi --prune >/dev/null 2>&1 || true
  fi
fi
ln -sfn "$(basename "$archive")" "$latest"
# The appVersion tag always names this context's image, also after a cached run.
if [[ $builder == docker ]]; then
  docker tag "$name:$hash_tag" "$name:$tag"
else
  bah tag "$name:$hash_tag" "$name:$tag"
fi
id=$(image_id "$name:$hash_tag")
size=$(du -h "$archive" | cut -f1)

log "image:    $name:$tag and $name:$hash_tag ($builder)"
log "image id: $id"
log "archive:  $archive ($size; also $latest)"
log "import:   ctr -n k8s.io images import $archive   (or: docker load -i $archive)"
if [[ $builder == buildah ]]; then
  log "storage:  buildah --root $storage_root --runroot $cache/buildah/run --storage-driver vfs images"
  if [[ $base == "$standin_base" ]]; then
    log "base:     $base, a local stand-in for $upstream_base (rmi it to retry the upstream image)"
  fi
fi
cat <<EOF
BUILDER=$builder
IMAGE=$name:$tag
IMAGE_HASH_TAG=$name:$hash_tag
IMAGE_ID=$id
CONTEXT_HASH=$hash
BASE_IMAGE=$base
ARCHIVE=$archive
BUILDAH_ROOT=$storage_root
BUILDAH_RUNROOT=$cache/buildah/run
EOF
