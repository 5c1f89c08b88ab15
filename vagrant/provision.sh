#!/usr/bin/env bash
# Provision the fntax stack inside the Vagrant VM (runs as root, idempotent).
# The repository is at /opt/fntax (rsynced by the Vagrantfile), where
# deploy/fntax-agent.service expects it.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
REPO=/opt/fntax
cd "$REPO"

echo "== fntax: the project's own bootstrap (bcc, kernel headers, prometheus, .venv) =="
apt-get update -q
apt-get install -y -q make
make bootstrap

echo "== fntax agent (systemd unit from deploy/) =="
install -d -m 0755 /etc/fntax /var/lib/fntax
[ -e /etc/fntax/rules.yaml ] || install -m 0644 deploy/rules.example.yaml /etc/fntax/rules.yaml
install -m 0644 deploy/fntax-agent.service /etc/systemd/system/fntax-agent.service

echo "== Prometheus (Debian's package, installed by the bootstrap) with fntax's rules =="
install -d /etc/prometheus/rules/fntax
install -m 0644 deploy/prometheus/rules/fntax-recording.yaml deploy/prometheus/rules/fntax-alerts.yaml \
    deploy/prometheus/rules/fntax-fleet.yaml /etc/prometheus/rules/fntax/
install -m 0644 vagrant/prometheus.yml /etc/prometheus/prometheus.yml
# Listen beyond loopback inside the VM so the forwarded port reaches it.
echo 'ARGS="--web.listen-address=0.0.0.0:9090 --storage.tsdb.retention.time=7d"' > /etc/default/prometheus
promtool check config /etc/prometheus/prometheus.yml

echo "== Grafana (Grafana's APT repository) with the provisioned dashboards =="
apt-get install -y -q apt-transport-https gnupg wget
install -d -m 0755 /etc/apt/keyrings
[ -s /etc/apt/keyrings/grafana.gpg ] || wget -qO- https://apt.grafana.com/gpg.key | gpg --dearmor > /etc/apt/keyrings/grafana.gpg
echo "deb [signed-by=/etc/apt/keyrings/grafana.gpg] https://apt.grafana.com stable main" > /etc/apt/sources.list.d/grafana.list
apt-get update -q
apt-get install -y -q grafana
install -m 0644 dashboards/provisioning/datasources/fntax.yaml /etc/grafana/provisioning/datasources/fntax.yaml
install -m 0644 dashboards/provisioning/dashboards/fntax.yaml /etc/grafana/provisioning/dashboards/fntax.yaml
install -d -o grafana -g grafana /var/lib/grafana/dashboards/fntax
install -m 0644 -o grafana -g grafana dashboards/json/*.json /var/lib/grafana/dashboards/fntax/
# A demo box: anonymous viewers, the host overview as home page.
grep -q GF_AUTH_ANONYMOUS_ENABLED /etc/default/grafana-server || cat >> /etc/default/grafana-server <<'CONF'
GF_AUTH_ANONYMOUS_ENABLED=true
GF_AUTH_ANONYMOUS_ORG_ROLE=Viewer
GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH=/var/lib/grafana/dashboards/fntax/fntax-host-overview.json
CONF

echo "== sample functions, so the dashboards have data =="
install -m 0644 vagrant/fntax-sample-workload.service /etc/systemd/system/fntax-sample-workload.service

systemctl daemon-reload
systemctl enable fntax-agent prometheus grafana-server fntax-sample-workload
systemctl restart fntax-agent prometheus grafana-server fntax-sample-workload

echo "== waiting for the agent, Prometheus and Grafana =="
for url in http://127.0.0.1:9636/metrics http://127.0.0.1:9090/-/ready http://127.0.0.1:3000/api/health; do
    for _ in $(seq 120); do curl -fsS -o /dev/null "$url" && break; sleep 1; done
    curl -fsS -o /dev/null "$url" || { echo "provision: $url never answered" >&2; exit 1; }
done
echo "fntax stack up: Grafana http://localhost:3000 (dashboards in folder fntax), Prometheus http://localhost:9090"
