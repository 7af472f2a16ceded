"""The evidence core: what the device, central and a third party share.

Identifiers and the session layout, the typed ledger entry (parsed and checked once from its bytes),
canonical serialisation, hashing, the Merkle tree, keys and signatures, segment encryption, durable
writes, the upload-deadline rule, the one rule book a session's ledger is judged by, and the offline
verifier. It imports only the standard library and `cryptography`: no PyAV, numpy, paho or hardware
code, so a third party can verify a session with nothing else installed.
"""
