//! The bound on downstream connections open at once, over every data-path
//! listener: a connection beyond it is closed as soon as it is accepted, and
//! counted, so that a flood of connections turns into refusals rather than
//! memory (each costs a task, buffers and a descriptor while it lives).
//!
//! Closing at once, rather than leaving the connection in the listen backlog,
//! tells a client to try elsewhere now instead of after its connect timeout.

use metrics::{Counter, Gauge};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

use std::sync::Arc;

use crate::metrics::{self as names, Direction};

pub struct Admission {
    slots: Arc<Semaphore>,
    open: Gauge,
    /// By [`Direction`]: outbound, inbound.
    refused: [Counter; 2],
}

/// A connection's slot, given back when it is dropped.
pub struct Admitted {
    _permit: OwnedSemaphorePermit,
    open: Gauge,
}

impl Admission {
    pub fn new(max_connections: usize) -> Admission {
        let slots = max_connections.clamp(1, Semaphore::MAX_PERMITS);
        Admission {
            slots: Arc::new(Semaphore::new(slots)),
            open: names::downstream_open(),
            refused: [Direction::Outbound, Direction::Inbound].map(names::downstream_refused),
        }
    }

    /// A slot for a connection just accepted, or `None` (counted) when every slot
    /// is taken.
    pub fn admit(&self, direction: Direction) -> Option<Admitted> {
        match self.slots.clone().try_acquire_owned() {
            Ok(permit) => {
                self.open.increment(1.0);
                Some(Admitted {
                    _permit: permit,
                    open: self.open.clone(),
                })
            }
            Err(TryAcquireError::NoPermits | TryAcquireError::Closed) => {
                let index = match direction {
                    Direction::Outbound => 0,
                    Direction::Inbound => 1,
                };
                self.refused[index].increment(1);
                None
            }
        }
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.open.decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_given_back_when_a_connection_ends() {
        let admission = Admission::new(2);
        let first = admission.admit(Direction::Outbound);
        let second = admission.admit(Direction::Inbound);
        assert!(first.is_some() && second.is_some());
        assert!(admission.admit(Direction::Outbound).is_none());
        drop(first);
        assert!(admission.admit(Direction::Outbound).is_some());
    }
}
