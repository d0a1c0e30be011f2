"""swell's metrics: in-process families updated on the hot path, rendered only on a scrape.

``core`` holds the families and the Prometheus text rendering, ``process`` the built-in
request and handle-call metrics of one process, ``scrape`` the admin API's aggregation of a
node's sources (controller, replicas, HAProxy's exporter).
"""
