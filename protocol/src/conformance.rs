//! Conformance checks (below).
