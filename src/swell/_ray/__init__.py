"""Running swell on a Ray cluster: replica actors, one HAProxy actor per node, the connection.

Only imported when the Ray engine is chosen (``address`` is set), so swell without Ray
installed never imports ``ray``.
"""
