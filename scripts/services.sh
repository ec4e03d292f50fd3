#!/usr/bin/env bash
# Installs (Debian packages, as root) and starts what the integration tests use: dockerd, Redis,
# PostgreSQL, Chromium, and busybox-static for the stand-in agent image. Safe to run again.
set -euo pipefail

need=()
command -v dockerd >/dev/null || need+=(docker.io)
command -v redis-server >/dev/null || need+=(redis-server)
[ -x /bin/busybox ] && /bin/busybox --list 2>/dev/null | grep -qx httpd || need+=(busybox-static)
command -v chromium >/dev/null || need+=(chromium)
# Whatever PostgreSQL the distribution ships (15 on Debian 12, 17 on Debian 13): never a fixed one.
command -v pg_ctlcluster >/dev/null && ls -d /usr/lib/postgresql/*/bin >/dev/null 2>&1 \
  || need+=(postgresql)
command -v debootstrap >/dev/null || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "missing packages: ${need[*]} (run as root, or: sudo apt-get install ${need[*]})" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

start_dockerd() {
  if docker info >/dev/null 2>&1; then return 0; fi
  # A killed daemon leaves its pid file and socket; its containerd may still be exiting.
  if [ -f /var/run/docker.pid ] && ! kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
    rm -f /var/run/docker.pid /var/run/docker.sock
  fi
  for _ in $(seq 1 50); do pgrep -x containerd >/dev/null || break; \
    pgrep -x dockerd >/dev/null && break; sleep 0.2; done
  if ! pgrep -x dockerd >/dev/null; then
    nohup dockerd >/var/log/claworc-dockerd.log 2>&1 &
  fi
  for _ in $(seq 1 150); do docker info >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "dockerd did not start; see /var/log/claworc-dockerd.log" >&2
  tail -20 /var/log/claworc-dockerd.log >&2 || true
  return 1
}

start_redis() {
  redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && return 0
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no >/dev/null
  for _ in $(seq 1 50); do redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "redis-server did not answer PING" >&2
  return 1
}

pg_cluster() {
  # "<version> <name>" of the first cluster; one is made (newest installed version) if none.
  local cluster version
  cluster="$(pg_lsclusters -h 2>/dev/null | awk 'NR == 1 {print $1, $2}')"
  if [ -z "$cluster" ]; then
    version="$(ls /usr/lib/postgresql | sort -V | tail -1)"
    pg_createcluster "$version" main >/dev/null
    cluster="$version main"
  fi
  echo "$cluster"
}

start_postgres() {
  if ! pg_isready -h 127.0.0.1 -q; then
    # shellcheck disable=SC2046  # version and name are two arguments
    pg_ctlcluster $(pg_cluster) start || pg_isready -h 127.0.0.1 -q
  fi
  for _ in $(seq 1 50); do pg_isready -h 127.0.0.1 -q && break; sleep 0.2; done
  # A known role for the tests; the test database itself is made by pytest-django.
  su postgres -c "psql -q -tc \"SELECT 1 FROM pg_roles WHERE rolname='claworc'\"" | grep -q 1 ||
    su postgres -c "psql -q -c \"CREATE ROLE claworc LOGIN SUPERUSER PASSWORD 'claworc'\""
}

start_dockerd
start_redis
start_postgres
echo "services: dockerd $(docker version -f '{{.Server.Version}}'), redis $(redis-cli ping), postgres $(pg_isready -h 127.0.0.1 | sed 's/.*- //')"
