//! Helpers for the end-to-end tests: a sandbox that runs the real `cocon` binary.
