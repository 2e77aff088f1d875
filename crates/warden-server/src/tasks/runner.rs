//! The queue workers (being written).
