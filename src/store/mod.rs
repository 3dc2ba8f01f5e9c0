//! State store. Stub: being written.
