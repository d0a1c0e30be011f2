"""The mutual handshake that opens every data-plane connection (frames in ``wire.py``).

Both sides prove they hold the cluster token without sending it: each answers the other's
fresh nonce with an HMAC. A process that took a dead replica's port therefore cannot make a
caller unpickle anything, and a caller that cannot prove itself is cut off before the replica
unpickles anything it sends.

The proofs also cover the replica id the caller means to reach, so a connection relayed to
another replica (or a port reused by a newer replica) fails the handshake instead of running
the call in the wrong place. Distinct labels keep a server's proof from being replayed as a
client's, and the other way around.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets

from swell._dataplane.wire import Kind, ProtocolError, read_handshake_frame, write_frame

NONCE_BYTES = 32
PROOF_BYTES = hashlib.sha256().digest_size
_SERVER_LABEL = b"swell-dataplane/1 server proof\x00"
_CLIENT_LABEL = b"swell-dataplane/1 client proof\x00"


class HandshakeError(ConnectionError):
    """The peer did not prove it holds the cluster token (or is not the replica expected)."""


def _proof(
    key: bytes, label: bytes, client_nonce: bytes, server_nonce: bytes, replica: str
) -> bytes:
    message = label + client_nonce + server_nonce + replica.encode()
    return hmac.new(key, message, hashlib.sha256).digest()


async def _expect(reader: asyncio.StreamReader, kind: Kind, length: int) -> bytes:
    try:
        return await read_handshake_frame(reader, kind, length)
    except (asyncio.IncompleteReadError, ProtocolError) as error:
        raise HandshakeError(f"the peer broke off the handshake: {error}") from None


async def prove_client(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, token: bytes, replica_id: str
) -> None:
    """Caller side: check that the server is ``replica_id`` of this cluster, then prove ourselves.

    Returns once the client's proof is queued; calls may follow it at once.
    """
    client_nonce = secrets.token_bytes(NONCE_BYTES)
    write_frame(writer, 0, Kind.HELLO, client_nonce)
    answer = await _expect(reader, Kind.SERVER_PROOF, NONCE_BYTES + PROOF_BYTES)
    server_nonce, server_proof = answer[:NONCE_BYTES], answer[NONCE_BYTES:]
    expected = _proof(token, _SERVER_LABEL, client_nonce, server_nonce, replica_id)
    if not hmac.compare_digest(server_proof, expected):
        raise HandshakeError(
            f"the peer did not prove it is replica {replica_id} of this swell cluster"
        )
    proof = _proof(token, _CLIENT_LABEL, client_nonce, server_nonce, replica_id)
    write_frame(writer, 0, Kind.CLIENT_PROOF, proof)


async def prove_server(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, token: bytes, replica_id: str
) -> None:
    """Replica side: prove we are ``replica_id``, then check the caller's proof."""
    client_nonce = await _expect(reader, Kind.HELLO, NONCE_BYTES)
    server_nonce = secrets.token_bytes(NONCE_BYTES)
    proof = _proof(token, _SERVER_LABEL, client_nonce, server_nonce, replica_id)
    write_frame(writer, 0, Kind.SERVER_PROOF, server_nonce + proof)
    client_proof = await _expect(reader, Kind.CLIENT_PROOF, PROOF_BYTES)
    expected = _proof(token, _CLIENT_LABEL, client_nonce, server_nonce, replica_id)
    if not hmac.compare_digest(client_proof, expected):
        raise HandshakeError("the caller did not prove it holds the cluster token")
