//! The kind end-to-end tests live in `tests/kind.rs`; see `e2e/kind/run.sh`.
