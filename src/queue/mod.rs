//! Queue state (in progress).
