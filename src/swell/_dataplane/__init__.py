"""The replica-to-replica data plane: gRPC calls straight from caller to callee."""
