//! Waiters: how trialtail learns that training finished. One file per waiter: [`procfs`] is Katib's
//! shared-PID-namespace scheme (the drop-in), [`pod_status`] the training container's status from a watch on the
//! own pod (the native sidecar).

pub mod pod_status;
pub mod procfs;
