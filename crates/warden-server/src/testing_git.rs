//! Git over HTTP for tests (being written).
