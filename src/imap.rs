//! IMAP desk session. Stub: being written.
