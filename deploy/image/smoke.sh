#!/usr/bin/env bash
# Runs the image the way the chart does (read-only root filesystem, user 10001, no capabilities,
# no privilege escalation, a tmpfs on /tmp) against the machine's local RabbitMQ, PostgreSQL and
# Redis (`make services`), in a vhost, database and key prefix of its own that are removed at the
# end:
#   1. the migration, as the hook Job runs it (one-shot);
#   2. every service's `serve` (those the image holds: webhook, delta-worker, card-writer,
#      subscription-manager, reconciler, admin-api): /health/live, /health/ready, /metrics
#      (checked with promtool when it is there); the admin API also refuses an unauthenticated
#      request with 401, and the `cardsync` CLI runs;
#   3. SIGTERM: each container must exit 0 within its grace period.
#
# Usage: deploy/image/smoke.sh [IMAGE]   (root, podman; CONTAINERS_CONF as in README.md)
set -euo pipefail

IMAGE=${1:-localhost/cardsync:dev}
RUN_ID=smoke$$
VHOST=cardsync-$RUN_ID
DATABASE=cardsync_$RUN_ID
PREFIX=$RUN_ID-
PROMTOOL=${PROMTOOL:-.venv/tools/promtool}
declare -A PORTS=([webhook]=28180 [delta-worker]=28181 [card-writer]=28182
                  [subscription-manager]=28183 [reconciler]=28184 [admin-api]=28185)
SERVICES=()   # the services this image holds, in PORTS' order

log() { printf 'smoke: %s\n' "$*"; }

cleanup() {
    for service in "${!PORTS[@]}"; do podman rm -f "$RUN_ID-$service" >/dev/null 2>&1 || true; done
    rabbitmqctl delete_vhost "$VHOST" >/dev/null 2>&1 || true
    psql -h /var/run/postgresql -U postgres -qc "DROP DATABASE IF EXISTS $DATABASE" >/dev/null 2>&1 || true
    redis-cli --scan --pattern "$PREFIX*" | xargs -r redis-cli del >/dev/null 2>&1 || true
}
trap cleanup EXIT

rabbitmqctl add_vhost "$VHOST" >/dev/null
rabbitmqctl set_permissions -p "$VHOST" guest '.*' '.*' '.*' >/dev/null
psql -h /var/run/postgresql -U postgres -qc "CREATE DATABASE $DATABASE"

# What the chart passes: a ConfigMap's settings and a Secret's URLs, as environment variables.
ENV=(
    -e CARDSYNC__BUS__URL="amqp://guest:guest@127.0.0.1:5672/$VHOST"
    -e CARDSYNC__POSTGRES__URL="postgres://postgres@127.0.0.1:5432/$DATABASE?sslmode=disable"
    -e CARDSYNC__REDIS__URL="redis://127.0.0.1:6379/0"
    -e CARDSYNC__REDIS__KEY_PREFIX="$PREFIX"
    -e CARDSYNC__TOPOLOGY__PREFIX="$PREFIX"
    -e CARDSYNC__BUS__QUEUE_TYPE=quorum
    -e CARDSYNC__TELEMETRY__LOG_FORMAT=json
    -e CARDSYNC__TELEMETRY__LOG_FILTER=info
    -e CARDSYNC__SECRETS__CREDENTIAL_KEY="$(head -c 32 /dev/urandom | base64)"
    # The chart's photo store with `photos.backend: none`: the pod's scratch /tmp.
    -e CARDSYNC__PHOTOS__URL=file:///tmp/cardsync-photos
    # The subscription manager gives Graph this address; nothing calls it here.
    -e CARDSYNC__SUBSCRIPTIONS__PUBLIC_BASE_URL=https://cardsync.example.com
    # The admin API's token issuer: an address that answers nothing, so every token is refused.
    -e CARDSYNC__AUTH__JWKS_URL=http://127.0.0.1:9/keys
    -e 'CARDSYNC__AUTH__AUDIENCES=["api://cardsync-smoke"]'
)
RESTRICTED=(--read-only --read-only-tmpfs=false --tmpfs /tmp:rw,size=64m,mode=1777
            --user 10001:10001 --cap-drop ALL --security-opt no-new-privileges --network host)

if podman run --rm --entrypoint sh "$IMAGE" -c 'command -v admin-api' >/dev/null 2>&1; then
    MIGRATE=(admin-api migrate)
else
    MIGRATE=(card-writer migrate)   # images built before admin-api existed
fi
log "migrate: ${MIGRATE[*]}"
podman run --rm "${RESTRICTED[@]}" "${ENV[@]}" "$IMAGE" "${MIGRATE[@]}"

for service in webhook delta-worker card-writer subscription-manager reconciler admin-api; do
    if podman run --rm --entrypoint sh "$IMAGE" -c "command -v $service" >/dev/null 2>&1; then
        SERVICES+=("$service")
    else
        log "$service: not in this image"
    fi
done
for service in "${SERVICES[@]}"; do
    podman run -d --name "$RUN_ID-$service" "${RESTRICTED[@]}" "${ENV[@]}" \
        -e CARDSYNC__HTTP__LISTEN="127.0.0.1:${PORTS[$service]}" "$IMAGE" "$service" serve >/dev/null
done

failed=0
for service in "${SERVICES[@]}"; do
    port=${PORTS[$service]}
    ready=""
    for _ in $(seq 60); do
        if ready=$(curl -sf "http://127.0.0.1:$port/health/ready"); then break; fi
        ready=""
        sleep 1
    done
    live=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/health/live" || true)
    if [[ -n $ready && $live == 200 ]]; then
        log "$service: live 200, ready 200 $ready"
    else
        log "$service: live $live, ready: $(curl -s "http://127.0.0.1:$port/health/ready" || true)"
        podman logs "$RUN_ID-$service" 2>&1 | tail -5
        failed=1
    fi
    if [[ -x $PROMTOOL ]]; then
        if curl -s "http://127.0.0.1:$port/metrics" | "$PROMTOOL" check metrics >/dev/null 2>&1; then
            log "$service: /metrics passes promtool check metrics"
        else
            log "$service: /metrics, promtool check metrics says:"
            curl -s "http://127.0.0.1:$port/metrics" | "$PROMTOOL" check metrics || true
        fi
    fi
done

if [[ " ${SERVICES[*]} " == *" admin-api "* ]]; then
    refused=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:${PORTS[admin-api]}/v1/tenants" || true)
    log "admin-api: GET /v1/tenants without a token -> $refused"
    [[ $refused == 401 ]] || failed=1
fi
if version=$(podman run --rm "${RESTRICTED[@]}" "$IMAGE" cardsync --version 2>&1); then
    log "cardsync CLI: $version"
else
    log "cardsync CLI: $version"
    failed=1
fi

for service in "${SERVICES[@]}"; do
    started=$(date +%s.%N)
    podman stop -t 30 "$RUN_ID-$service" >/dev/null
    code=$(podman inspect "$RUN_ID-$service" --format '{{.State.ExitCode}}')
    elapsed=$(echo "$(date +%s.%N) - $started" | bc)
    log "$service: SIGTERM -> exit $code after ${elapsed%????????}s"
    [[ $code == 0 ]] || failed=1
done

[[ $failed == 0 ]] && log "ok" || { log "FAILED"; exit 1; }
