"""Names every side of swell must agree on: paths, headers, HAProxy object names.

The controller, the replicas, the HAProxy renderer and the routers import these from here, so
a path or header is spelled once. (The data plane's frame kinds live in ``_dataplane/wire.py``,
the one module that reads and writes frames.)
"""

from __future__ import annotations

# A replica's control listener: a port of its own, never the user-facing one, so no client
# request can reach these through HAProxy whatever its path encoding.
CONTROL_READY_PATH = "/-/swell/ready"  # HAProxy's health check: 200, or 503 while draining
CONTROL_HEALTH_PATH = "/-/swell/health"  # runs the user's check_health()
CONTROL_STATS_PATH = "/-/swell/stats"  # in-flight requests and handle-call load
CONTROL_RECONFIGURE_PATH = "/-/swell/reconfigure"  # a new user_config (POST)
CONTROL_METRICS_PATH = "/-/swell/metrics"  # the replica's metric families, as JSON snapshots

# Proves a caller is part of this swell cluster (controller → replica control calls, routers →
# controller watches). Compared in constant time everywhere.
CLUSTER_TOKEN_HEADER = "x-swell-token"

# The admin API's credential, as a bearer token in either header (the second is what a KubeRay
# operator with token authentication sends).
ADMIN_TOKEN_HEADERS = ("authorization", "x-ray-authorization")

# Set by HAProxy on every request it forwards (overwriting any a client sent): the route
# prefix of the application, which the replica turns into the ASGI root_path. Because it comes
# with each request, an application's prefix can change without restarting its replicas.
ROUTE_PREFIX_HEADER = "x-swell-route-prefix"

# Echoed on every response and generated when a client sent none.
REQUEST_ID_HEADER = "x-request-id"

# Names the model a request is for (Ray Serve's header): HAProxy sends each model's requests to
# the replica that served it before, and the replica hands it to get_multiplexed_model_id().
MULTIPLEXED_MODEL_ID_HEADER = "serve_multiplexed_model_id"

# The admin API.
APPLICATIONS_PATH = "/api/serve/applications/"
SHUTDOWN_PATH = "/api/swell/shutdown"
REPLICA_SETS_PREFIX = "/api/swell/replica-sets/"
DEMAND_PREFIX = "/api/swell/demand/"
# Another process of the admin token's holder joins the cluster (handles) through these.
CLUSTER_PATH = "/api/swell/cluster"
INGRESS_PREFIX = "/api/swell/ingress/"
LOGS_PATH = "/api/swell/logs"
ADMIN_HEALTH_PATH = "/-/healthz"
METRICS_PATH = "/metrics"  # the node's Prometheus scrape endpoint
DASHBOARD_PATH = "/dashboard"  # the status page (static HTML; its data needs a token)
DASHBOARD_DATA_PATH = "/api/swell/dashboard"  # what the status page polls

# Every node's ingress answers this itself (HAProxy, no replica involved), with Ray Serve's
# proxy contract that KubeRay's probes rely on: 200 and a body holding "success" while the node
# can serve, else 503 and the reason.
INGRESS_HEALTH_PATH = "/-/healthz"
INGRESS_HEALTHY = "success"
INGRESS_NO_ROUTES = "no routes yet"
INGRESS_NO_REPLICAS = "no replicas yet"
INGRESS_DRAINING = "draining"

# HAProxy object names.
NO_ROUTE_BACKEND = "swell_no_route"
# A backend no request is routed to: its one server is a flag, in maintenance until the node's
# ingress starts draining (set through the runtime API, so it takes effect without a reload).
DRAINING_BACKEND = "swell_draining"
DRAINING_FLAG = "flag"
WAKE_SERVER = "swell_wake"
# The key under which the ingress reports requests queued in a backend (not yet at a server).
BACKEND_QUEUE = "BACKEND"


# The gRPC frontend's answer when no application matches (a gRPC NOT_FOUND, from HAProxy).
GRPC_NO_APP_BACKEND = "swell_grpc_no_app"
# gRPC metadata that names the application a call is for (Ray Serve's key).
GRPC_APPLICATION_METADATA = "application"
# Ray Serve's gRPC health service: Healthz and ListApplications. HAProxy sends such calls to
# any app's replica with the names of all applications in GRPC_APPLICATIONS_HEADER.
GRPC_API_SERVICE = "ray.serve.RayServeAPIService"
GRPC_APPLICATIONS_HEADER = "x-swell-applications"


def grpc_backend_name(app_name: str) -> str:
    """The HAProxy backend of one application's gRPC servers."""
    return f"grpc_{app_name}"


def backend_name(app_name: str) -> str:
    """The HAProxy backend of one application."""
    return f"app_{app_name}"
