//! Task store on SQL (being written).
