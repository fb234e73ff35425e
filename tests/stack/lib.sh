# Shell functions shared by tests/stack/up and tests/image/build (source it; bash only):
# make sure a Docker engine runs, install missing Debian packages, find the Debian mirror, and
# build-or-import local images tagged with a hash of their recipe (no registry is reachable).
# The sourcing script sets LOG_NAME (its log prefix), CACHE (where tarballs and logs are kept)
# and IMAGE_NOTE (the comment `docker import` records).

log() { printf '[%s %(%H:%M:%S)T] %s\n' "$LOG_NAME" -1 "$*" >&2; }
die() { printf '[%s] ERROR: %s\n' "$LOG_NAME" "$*" >&2; exit 1; }

is_root() { [ "$(id -u)" -eq 0 ]; }

ensure_packages() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    is_root || die "Debian packages ${missing[*]} are missing and only root can install them."
    log "installing Debian packages: ${missing[*]} (apt-get update first)"
    DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
}

ensure_docker() {
    if docker info >/dev/null 2>&1; then
        log "docker engine is running"
        ensure_packages debootstrap busybox-static
        command -v docker-compose >/dev/null || ensure_packages docker-compose
        return 0
    fi
    ensure_packages docker.io docker-compose debootstrap busybox-static
    command -v dockerd >/dev/null || die "dockerd is not installed and could not be installed."
    is_root || die "no Docker engine answers and only root can start dockerd."
    # A pid file left by a dockerd that died would stop the new one from starting.
    if [ -f /var/run/docker.pid ] && ! kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
        log "removing stale /var/run/docker.pid"
        rm -f /var/run/docker.pid
    fi
    log "starting dockerd --bridge=none --iptables=false --ip-forward=false (log: /var/log/dockerd.log)"
    setsid nohup dockerd --bridge=none --iptables=false --ip-forward=false \
        >/var/log/dockerd.log 2>&1 </dev/null &
    local i
    for i in $(seq 1 60); do
        if docker info >/dev/null 2>&1; then
            log "docker engine is up after ${i} s"
            return 0
        fi
        sleep 1
    done
    tail -n 20 /var/log/dockerd.log >&2 || true
    die "dockerd did not answer 'docker info' within 60 s (see /var/log/dockerd.log)."
}

recipe_hash() {  # hash of the files that define an image
    cat "$@" | sha256sum | cut -c1-12
}

debian_mirror() {
    local m=""
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then
        m=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
    fi
    if [ -z "$m" ] && [ -f /etc/apt/sources.list ]; then
        m=$(awk '$1 == "deb" && $0 !~ /security/ {
                   for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }' /etc/apt/sources.list)
    fi
    [ -n "$m" ] || die "no Debian mirror found in /etc/apt/sources.list.d/debian.sources nor /etc/apt/sources.list."
    printf '%s\n' "$m"
}

# ensure_image NAME TAG BUILD_CMD...: make sure image NAME:TAG exists (import it from the
# cached tarball, building that with BUILD_CMD OUT_TAR when missing), then tag it NAME:current.
ensure_image() {
    local name=$1 tag=$2; shift 2
    local ref="$name:$tag" base=${1##*/} short=${name##*/}
    local tarball="$CACHE/$short-$tag.tar" buildlog="$CACHE/build-$short.log"
    if docker image inspect "$ref" >/dev/null 2>&1; then
        log "image $ref is up to date (recipe unchanged)"
    else
        if [ ! -s "$tarball" ]; then
            log "building $ref with $base (log: $buildlog)"
            local t0=$SECONDS
            if ! "$@" "$tarball" >"$buildlog" 2>&1; then
                tail -n 30 "$buildlog" >&2
                die "building image $ref failed (full log: $buildlog)."
            fi
            log "built $tarball in $((SECONDS - t0)) s"
        fi
        log "importing $ref"
        docker import -m "$IMAGE_NOTE, recipe hash $tag" "$tarball" "$ref" >/dev/null
        # Tarballs of older recipes of the same image are of no further use.
        find "$CACHE" -maxdepth 1 -name "$short-*.tar" ! -name "$short-$tag.tar" -delete
    fi
    docker tag "$ref" "$name:current"
}
