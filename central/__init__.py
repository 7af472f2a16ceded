"""Central's side: the receiver that stores, judges and receipts what the devices send, the store behind one
interface, the session index, the working copies, and `recorder central …`. See docs/ARCHITECTURE.md."""
