#!/bin/sh
# Refuse to start while a secret still holds a placeholder of docker/example.env: the service itself
# refuses only its published development secrets (service/settings.py), and every placeholder there
# would otherwise be accepted in production. Then become the command (exec: signals reach it).
set -eu

for name in COIN_SECRET_KEY COIN_SIGNING_KEY COIN_ADMIN_TOKEN COIN_CHAIN_KEY COIN_METRICS_TOKEN COIN_DATABASE_URL; do
    eval "value=\${${name}:-}"
    case "${value}" in
        *CHANGE-ME*)
            echo "error: ${name} still holds the placeholder of docker/example.env; set it in docker/.env" >&2
            exit 2
            ;;
    esac
done

exec "$@"
