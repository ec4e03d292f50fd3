#!/bin/bash
# Start-up of the dashboard image. The command is the role:
#   all (default)  web, worker and beat together (honcho + Procfile): the seed's single `docker run`
#   web            gunicorn (uvicorn worker: pages and desktop websockets) on $CLAWORC_BIND
#   worker         Celery worker        beat   Celery beat
# Anything else is run as given, as the same user with the same keys, e.g.
#   docker exec -it claworc-dashboard claworc-entrypoint python manage.py shell
#
# As root it prepares the data directory, then drops to the `claworc` user with the Docker
# socket's group added (the socket needs root or that group). Then, for every role: keys, the
# config-directory check (bot containers must see their config), and for all/web the migrations.
set -euo pipefail

data_dir="${CLAWORC_DATA_DIR:-/app/data}"
config_dir="${CLAWORC_DOCKER_CONFIG_DIR:-$data_dir/configs}"

if [ "$(id -u)" = 0 ] && [ "${CLAWORC_RUN_AS_ROOT:-false}" != true ] && id claworc >/dev/null 2>&1; then
  mkdir -p "$data_dir" "$config_dir"
  # A fresh volume is root-owned; files written by an earlier root run must stay writable.
  find "$data_dir" "$config_dir" -xdev \! -user claworc -exec chown claworc:claworc {} + 2>/dev/null || true
  docker_url="${CLAWORC_DOCKER_HOST:-${DOCKER_HOST:-unix:///var/run/docker.sock}}"
  sock="${docker_url#unix://}"
  groups="claworc"
  if [ "$sock" != "$docker_url" ] && [ -S "$sock" ]; then
    mode="$(stat -c %A "$sock")"
    if [ "${mode:5:1}" = w ]; then
      groups="claworc,$(stat -c %g "$sock")"
    else
      echo "claworc: $sock is not writable by its group ($mode); running as root" >&2
      groups=""
    fi
  fi
  if [ -n "$groups" ]; then
    exec setpriv --reuid=claworc --regid=claworc --groups="$groups" --inh-caps=-all \
      env HOME=/home/claworc "$0" "$@"
  fi
fi

mkdir -p "$data_dir" "$config_dir"
# The seed's `docker run` example passes no secrets: generate them once into the data volume.
if [ -z "${SECRET_KEY:-}" ]; then
  [ -s "$data_dir/secret.key" ] ||
    python -c 'import secrets; print(secrets.token_urlsafe(50))' >"$data_dir/secret.key"
  SECRET_KEY="$(cat "$data_dir/secret.key")"
  export SECRET_KEY
fi
if [ -z "${CLAWORC_ENCRYPTION_KEY:-}" ]; then
  [ -s "$data_dir/encryption.key" ] ||
    python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())' \
      >"$data_dir/encryption.key"
  CLAWORC_ENCRYPTION_KEY="$(cat "$data_dir/encryption.key")"
  export CLAWORC_ENCRYPTION_KEY
fi
chmod 600 "$data_dir"/secret.key "$data_dir"/encryption.key 2>/dev/null || true

role="${1:-all}"
case "$role" in
  all | web | worker | beat) if [ $# -gt 0 ]; then shift; fi ;;
  *) exec "$@" ;;
esac

cd /app
# Refuse before anything starts when the daemon cannot see the config directory.
python manage.py check_docker_host

if [ "$role" = all ] || [ "$role" = web ]; then
  python manage.py migrate --no-input -v 0
  [ -d /app/staticfiles ] || python manage.py collectstatic --no-input -v 0
  python manage.py ensure_admin
  if python manage.py help detect_backend >/dev/null 2>&1; then
    python manage.py detect_backend || true
  fi
fi

case "$role" in
  all) exec honcho -d /app -f /app/Procfile start ;;
  web)
    exec gunicorn claworc_site.asgi:application --worker-class uvicorn_worker.UvicornWorker \
      --bind "${CLAWORC_BIND:-0.0.0.0:8000}" \
      --workers "${GUNICORN_WORKERS:-2}" --access-logfile - "$@" ;;
  worker)
    exec celery -A claworc_site worker --loglevel "${LOG_LEVEL:-INFO}" \
      --hostname "worker@%h" "$@" ;;
  beat) exec celery -A claworc_site beat --loglevel "${LOG_LEVEL:-INFO}" "$@" ;;
esac
