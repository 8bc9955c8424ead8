#!/usr/bin/env bash
# A plain, careful hand-written deploy script: the same docker commands as `fab deploy`, one
# remote call per step. The benchmark runs it twice: with RUN="ssh ... host" (one ssh per step)
# and with RUN="sh -c" (the floor: the commands back to back on the VM, no SSH at all).
#
# usage: RUN="ssh root@vm2" deploy.sh APP_DIR IMAGE TAG PROJECT
set -euo pipefail
app_dir=$1 image=$2 tag=$3 project=$4
compose="docker compose --file compose.yaml --project-name $project"
release="env DEPLOY_IMAGE=$image DEPLOY_TAG=$tag"

step() { $RUN "cd $app_dir && $1"; }

step "mkdir .deploy/lock"
trap 'step "rmdir .deploy/lock"' EXIT
step "docker pull --quiet $image:$tag >/dev/null"
step "mkdir -p backups && if [ -f data/app.db ]; then cp -p data/app.db backups/script-$tag.sqlite3; fi"
step "$release $compose run --rm -T app sh -c 'alembic upgrade head' 2>/dev/null"
step "$release $compose up -d --remove-orphans 2>/dev/null"
step "end=\$((\$(date +%s) + 60)); while [ \$(date +%s) -lt \$end ]; do
        id=\$($compose ps -q app); s=\$(docker inspect --format '{{.State.Health.Status}}' \$id)
        [ \"\$s\" = healthy ] && exit 0; sleep 0.2; done; exit 1"
step "printf '{\"tag\": \"%s\", \"action\": \"script\"}\n' $tag >> .deploy/history.jsonl &&
      sed -i 's/^DEPLOY_TAG=.*/DEPLOY_TAG=$tag/' .env"
