#!/usr/bin/env bash
# The floor of a blue/green deploy behind Caddy: the same docker commands as `fab deploy` with
# proxy = true, and the same upstream-file write, back to back on the VM (RUN="sh -c" inside
# its namespaces: no SSH). A new container beside the old one, its health through Caddy
# (Docker's healthy and one 200 through Caddy's check socket), the upstream file renamed,
# the old container stopped and removed. Prints the switch's phases last:
#   phases start=S healthy=S stop=S
#
# usage: RUN="sh -c" deploy_proxy.sh APP_DIR IMAGE TAG PROJECT PROXY_DIR HOST
set -euo pipefail
app_dir=$1 image=$2 tag=$3 project=$4 proxy_dir=$5 host=$6
compose="docker compose --file compose.proxy.yaml --project-name $project"
release="env DEPLOY_IMAGE=$image DEPLOY_TAG=$tag"
labels="--filter label=com.docker.compose.project=$project \
--filter label=com.docker.compose.service=app --filter label=com.docker.compose.oneoff=False"

step() { $RUN "cd $app_dir && $1"; }
now() { date +%s.%N; }
since() { awk -v a="$(now)" -v b="$1" 'BEGIN { printf "%.2f", a - b }'; }

step "mkdir .deploy/lock"
trap 'step "rmdir .deploy/lock"' EXIT
step "docker pull --quiet $image:$tag >/dev/null"
step "mkdir -p backups && if [ -f data/app.db ]; then cp -p data/app.db backups/script-$tag.sqlite3; fi"
step "$release $compose run --rm -T app sh -c 'alembic upgrade head' 2>/dev/null"
old=$(step "docker ps -q --no-trunc $labels")
t0=$(now)
step "$release $compose up -d --no-recreate --no-deps --scale app=2 app 2>/dev/null"
new=$(step "docker ps -q --no-trunc $labels" | grep -vxF "$old")
name=$(step "docker inspect --format '{{.Name}}' $new")
upstream="${name#/}:8000"
started=$(since "$t0")
t1=$(now)
step "end=\$((\$(date +%s) + 60)); while [ \$(date +%s) -lt \$end ]; do
        s=\$(docker inspect --format '{{.State.Health.Status}}' $new)
        c=\$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 \
             --unix-socket $proxy_dir/run/check.sock -H 'X-Deploy-Upstream: $upstream' \
             http://$host/health)
        [ \"\$s\" = healthy ] && [ \"\$c\" = 200 ] && exit 0; sleep 0.2; done; exit 1"
healthy=$(since "$t1")
f="$proxy_dir/conf/upstreams/$project"
step "printf '%s' '$upstream' > $f.tmp && mv $f.tmp $f"
t2=$(now)
step "docker stop $old >/dev/null && docker rm $old >/dev/null"
stopped=$(since "$t2")
step "printf '{\"tag\": \"%s\", \"action\": \"script\"}\n' $tag >> .deploy/history.jsonl &&
      sed -i 's/^DEPLOY_TAG=.*/DEPLOY_TAG=$tag/' .env"
echo "phases start=$started healthy=$healthy stop=$stopped"
