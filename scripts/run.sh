#!/usr/bin/env bash
# Development run: migrate, load demo data, then supervise the services below.
# Ctrl-C / TERM stops them all; if one dies, the others are stopped too.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
BIN="${VENV:-.venv}/bin"
export PATH="$PWD/$BIN:$PATH"
export DEBUG="${DEBUG:-1}"
# Service output goes through a pipe; keep it line by line.
export PYTHONUNBUFFERED=1

# One line per service: "name|command". Add a line to add a process.
SERVICES=(
    "web|python manage.py runserver 127.0.0.1:8000"
    "dicom|python manage.py dicom_server"
    "hl7|python manage.py hl7_listener"
)

mkdir -p var
if ! compgen -G '/usr/lib/*/libpangoft2-1.0.so.0' >/dev/null; then
    echo "run.sh: PDFs (appointment letters) need Pango: apt-get install libpango-1.0-0 libpangoft2-1.0-0 fonts-dejavu-core" >&2
fi
python manage.py migrate --no-input
python manage.py load_demo

declare -A NAMES=()
PIDS=()

stop_all() {
    trap - INT TERM
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
    # Give them 10 s to exit cleanly, then kill what is left.
    for _ in $(seq 100); do
        local alive=0
        for pid in "${PIDS[@]}"; do kill -0 -- "-$pid" 2>/dev/null && alive=1; done
        ((alive)) || return 0
        sleep 0.1
    done
    for pid in "${PIDS[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
}
trap 'stop_all; exit 130' INT
trap 'stop_all; exit 143' TERM

for service in "${SERVICES[@]}"; do
    name=${service%%|*}
    cmd=${service#*|}
    echo "run.sh: starting $name: $cmd"
    # setsid: own process group, so stopping it also stops what it spawned
    # (runserver's autoreloader child, worker pools), and a terminal Ctrl-C
    # reaches only us. The prefixer ignores signals and ends at EOF, so the
    # last lines a service prints on shutdown are not lost.
    setsid bash -c "$cmd" </dev/null \
        > >(trap '' INT TERM; exec sed -u "s/^/[$name] /") 2>&1 &
    PIDS+=("$!")
    NAMES[$!]=$name
done

# Wait for the first service to exit (or a signal), then stop the rest.
status=0
wait -n "${PIDS[@]}" || status=$?
for pid in "${PIDS[@]}"; do
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "run.sh: ${NAMES[$pid]} exited (status $status); stopping the others" >&2
        break
    fi
done
stop_all
exit $((status ? status : 1))
