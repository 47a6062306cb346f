#!/usr/bin/env bash
# Starts the servers the integration tests talk to (RabbitMQ, Redis, memcached, PostgreSQL,
# MariaDB) when installed but down.
set -uo pipefail

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
    local port=$1 name=$2
    for _ in $(seq 1 120); do
        port_open "$port" && return 0
        sleep 0.5
    done
    echo "ci/services.sh: $name did not come up on 127.0.0.1:$port" >&2
    return 1
}

if ! port_open 6379 && command -v redis-server >/dev/null 2>&1; then
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
    wait_port 6379 Redis
fi

if ! port_open 5672 && command -v rabbitmq-server >/dev/null 2>&1; then
    rabbitmq-server -detached >/dev/null 2>&1 || true
    wait_port 5672 RabbitMQ
fi

if ! port_open 11211 && command -v memcached >/dev/null 2>&1; then
    memcached -d -u root -l 127.0.0.1 -p 11211
    wait_port 11211 memcached
fi

# PostgreSQL (django-db:// tests): Debian's first cluster, trusting loopback as the tests expect
if ! port_open 5432 && command -v pg_lsclusters >/dev/null 2>&1; then
    read -r pg_version pg_cluster _ < <(pg_lsclusters --no-header | head -n 1) || true
    if [ -n "${pg_version:-}" ]; then
        hba="/etc/postgresql/$pg_version/$pg_cluster/pg_hba.conf"
        grep -q '^host all all 127.0.0.1/32 trust' "$hba" \
            || sed -i '1i host all all 127.0.0.1/32 trust' "$hba"
        pg_ctlcluster "$pg_version" "$pg_cluster" start
        wait_port 5432 PostgreSQL
    fi
fi

if ! port_open 3306 && [ -x /usr/sbin/mariadbd ]; then
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
    wait_port 3306 MariaDB
fi
exit 0
