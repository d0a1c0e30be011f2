"""Model affinity at the ingress: a model's requests go back to the replica that served it.

Each application backend keeps a stick table keyed by the ``serve_multiplexed_model_id``
header: the first request for a model goes to the least busy replica (which loads it), and
HAProxy sends the model's later requests to that same replica. Servers are remembered by name,
which a reload keeps, so the table stays right across reloads of the same worker's entries.
A request without the header matches no rule and is balanced by ``leastconn`` as before.

Why a table and not a hash of the header (``balance hdr``): a hash would send requests
without the header round robin instead of to the least busy replica, would spread models
unevenly (a replica past ``max_num_models_per_replica`` evicts and reloads forever), and
every membership change would move a share of all models to replicas that lack them. With
the table only the models of a replica that leaves move, each to one replica.

HAProxy still honours an entry for a server set to drain, so a draining replica would keep
receiving its models' requests: swell forgets the server's entries when it drains it.
"""

from __future__ import annotations

from swell._protocol import MULTIPLEXED_MODEL_ID_HEADER

# Longer ids are cut to this many bytes for the key (two ids alike that far share a replica).
MODEL_ID_KEY_BYTES = 128
# Models remembered per application; past it the least recently used entries go. Memory is
# taken as entries appear.
MODEL_TABLE_ENTRIES = 100_000


# The wake-up server (scale from zero) forwards a cold app's first requests: a model must not
# stick to it, or its requests would keep going through the controller once replicas are up.
WAKE_SERVER_WORDS = "non-stick"


def backend_lines(backend: str) -> list[str]:
    """The lines of an application backend that keep each model on its replica.

    While requests queue in the backend (a replica is at ``max_ongoing_requests``), a model's
    request goes to the least busy replica instead, which loads the model too, and its entry
    is left as it was: a hot model is not held to one replica, as in Ray, whose routers also
    fall back to other replicas when those holding the model are busy.
    """
    return [
        f"    stick-table type string len {MODEL_ID_KEY_BYTES} size {MODEL_TABLE_ENTRIES} "
        "srvkey name",
        f"    stick on req.hdr({MULTIPLEXED_MODEL_ID_HEADER}) unless {{ queue({backend}) gt 0 }}",
    ]


def server_id(servers_state: str, name: str) -> int | None:
    """The numeric id of server ``name`` in a ``show servers state <backend>`` answer."""
    for line in servers_state.splitlines():
        values = line.split()
        # Format 1: be_id be_name srv_id srv_name ...
        if len(values) > 3 and not line.startswith("#") and values[3] == name:
            try:
                return int(values[2])
            except ValueError:
                return None
    return None


def forget_command(backend: str, server: int) -> str:
    """The runtime command that drops every model entry pointing at server id ``server``."""
    return f"clear table {backend} data.server_id eq {server}"
