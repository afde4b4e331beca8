# shellcheck shell=bash
# Sourced by bench/callgrind.sh and bench/perf-stat.sh: the upstream both measure
# the proxy against, an nginx (one worker) answering every request with a small
# static body, over HTTP/1.1 keep-alive on one port and h2c on another; and the
# free ports both take, so that two runs at once do not collide.

# free_ports N: prints N loopback ports that were free a moment ago.
free_ports() {
  python3 - "$1" <<'PY'
import socket, sys
held = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in held:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in held))
PY
}

# nginx_upstream_conf DIR H1_PORT H2_PORT: prints the nginx.conf (state in DIR).
nginx_upstream_conf() {
  cat <<CONF
worker_processes 1;
daemon off;
pid $1/nginx.pid;
error_log $1/nginx-error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  client_body_temp_path $1;
  server {
    listen 127.0.0.1:$2;
    listen 127.0.0.1:$3 http2;
    http2_max_requests 10000000;
    location / { return 200 "a small static body\n"; }
  }
}
CONF
}
