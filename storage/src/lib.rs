//! storage (in progress)
