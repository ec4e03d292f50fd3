#!/usr/bin/env bash
# `make run`: sets everything up and runs web, worker and beat together; Ctrl-C stops all three.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh

export CLAWORC_DATA_DIR="${CLAWORC_DATA_DIR:-$PWD/data}"
mkdir -p "$CLAWORC_DATA_DIR"
# Embedded defaults for a local run; every one can be overridden from the environment or .env.
secret_file="$CLAWORC_DATA_DIR/secret.key"
key_file="$CLAWORC_DATA_DIR/encryption.key"
[ -s "$secret_file" ] || .venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(50))' > "$secret_file"
[ -s "$key_file" ] || .venv/bin/python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())' > "$key_file"
chmod 600 "$secret_file" "$key_file"
export SECRET_KEY="${SECRET_KEY:-$(cat "$secret_file")}"
export CLAWORC_ENCRYPTION_KEY="${CLAWORC_ENCRYPTION_KEY:-$(cat "$key_file")}"
export CLAWORC_NODE_IP="${CLAWORC_NODE_IP:-127.0.0.1}"
export CLAWORC_DOCKER_CONFIG_DIR="${CLAWORC_DOCKER_CONFIG_DIR:-$CLAWORC_DATA_DIR/configs}"
export CLAWORC_BIND="${CLAWORC_BIND:-127.0.0.1:8000}"
mkdir -p "$CLAWORC_DOCKER_CONFIG_DIR"
# /metrics sums what web and worker processes measured through files here; a new run starts
# empty, as prometheus_client's multiprocess mode requires.
export PROMETHEUS_MULTIPROC_DIR="${PROMETHEUS_MULTIPROC_DIR:-$CLAWORC_DATA_DIR/prometheus}"
rm -rf "$PROMETHEUS_MULTIPROC_DIR" && mkdir -p "$PROMETHEUS_MULTIPROC_DIR"

.venv/bin/python manage.py migrate --no-input -v 0
.venv/bin/python manage.py collectstatic --no-input -v 0
.venv/bin/python manage.py ensure_admin
.venv/bin/python manage.py detect_backend || true
echo "Claworc: http://$CLAWORC_BIND/admin/"
if [ -s "$CLAWORC_DATA_DIR/admin-password" ]; then
  echo "Admin password (generated at the first start): $CLAWORC_DATA_DIR/admin-password"
fi
echo "Reset an admin password: .venv/bin/python manage.py changepassword ${CLAWORC_ADMIN_USER:-admin}"
echo "(manage.py commands work from a plain shell here: they read the keys in $CLAWORC_DATA_DIR)"
# The Procfile names bare commands (gunicorn, celery): they come from the virtualenv.
export PATH="$PWD/.venv/bin:$PATH"
exec honcho -d . -f Procfile start
