//! Waiters: how the drop-in mode learns that training finished. One file per waiter; [`procfs`] is Katib's
//! shared-PID-namespace scheme (CONTRACT §4).

pub mod procfs;
