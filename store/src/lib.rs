//! pop event store (being written).
