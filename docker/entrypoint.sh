#!/bin/sh
# Starts tritonserver with its admin APIs behind a key that never ships in the image.
#
# The key comes from the file GENSERVE_ADMIN_KEY_FILE names (a mounted Kubernetes Secret or Docker
# secret), else from GENSERVE_ADMIN_KEY. With neither (or a named file that is absent: an optional
# Secret not created), a random key is drawn that nobody knows: the admin APIs stay closed instead of
# opening with a published default.
set -eu

if [ -n "${GENSERVE_ADMIN_KEY_FILE:-}" ] && [ -r "$GENSERVE_ADMIN_KEY_FILE" ]; then
    key=$(cat "$GENSERVE_ADMIN_KEY_FILE")
elif [ -n "${GENSERVE_ADMIN_KEY:-}" ]; then
    key=$GENSERVE_ADMIN_KEY
else
    key=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
    echo "genserve: no admin key (GENSERVE_ADMIN_KEY_FILE=${GENSERVE_ADMIN_KEY_FILE:-} unreadable or unset," \
        "GENSERVE_ADMIN_KEY unset): admin APIs are closed to every caller" >&2
fi
if [ -z "$key" ]; then
    echo "genserve: the admin key is empty; set GENSERVE_ADMIN_KEY or GENSERVE_ADMIN_KEY_FILE" >&2
    exit 64
fi
unset GENSERVE_ADMIN_KEY

# Model control, repository, shared-memory registration, logging and trace change the server for every
# caller: only requests carrying the admin-key header reach them. Inference, health, metadata and
# statistics stay open.
# Triton takes the key only as a flag, so it is visible in this container's process list (not to
# other pods, nor to other containers unless the pod shares its process namespace).
restricted="model-repository,shared-memory,logging,trace"
exec tritonserver "$@" \
    "--http-restricted-api=${restricted}:admin-key=${key}" \
    "--grpc-restricted-protocol=${restricted}:admin-key=${key}"
