"""The replica-to-replica data plane: swell's framed protocol over TCP, caller to callee."""
