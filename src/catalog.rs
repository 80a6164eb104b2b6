//! The metadata catalog (in progress).
