"""swell's log files: one per replica, one for the controller, one for HAProxy, in one directory.

``format.py`` writes a record as a TEXT or JSON line carrying application, deployment, replica
and request id; ``files.py`` names the files and owns the handler that appends to them;
``replica.py`` and ``controller.py`` set a process up; ``access.py`` writes access lines;
``reader.py`` merges the files in time order for ``swell logs``.
"""
