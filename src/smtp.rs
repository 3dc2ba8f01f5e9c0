//! SMTP outbox (being written).
