"""The evidence core: what the device, central and a third party share.

Identifiers and the session layout, the typed ledger entry (parsed and checked once from its bytes),
canonical serialisation, hashing, the Merkle tree, keys and signatures, segment encryption, durable
writes, the upload-deadline rule, the one rule book a session's ledger is judged by, and the offline
verifier. It imports only the standard library and `cryptography`: no PyAV, numpy, paho or hardware
code. Verifying needs not even `cryptography` (a pure-Python Ed25519 check stands in, `ed25519.py`): the
files `standalone.verifier_sources()` names verify a session on a bare CPython (FORMAT §7.5).
"""
