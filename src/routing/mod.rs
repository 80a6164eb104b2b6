//! Exchanges, bindings and routing (in progress).
