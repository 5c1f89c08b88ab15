"""fntax's Grafana dashboards as code (see dashboards/README.md)."""
