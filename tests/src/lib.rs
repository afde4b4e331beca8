//! Shared harness for the end-to-end tests: locating the built binaries, free ports, polling.
