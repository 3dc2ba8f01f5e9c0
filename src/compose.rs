//! Outgoing mail as bytes. Stub: being written.
