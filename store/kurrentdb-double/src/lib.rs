//! A protocol double of KurrentDB for pop's tests.
