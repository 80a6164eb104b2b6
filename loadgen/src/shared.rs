//! What the run's threads share: the meter, the stop flags, the first
//! failure, and the gate that starts every worker at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};

use crate::amqp::Error;
use crate::meter::Meter;

#[derive(Default)]
pub struct Shared {
    pub meter: Meter,
    /// Producers stop publishing (end of run, Ctrl-C or failure).
    pub stop_producers: AtomicBool,
    /// Consumers stop reading (after the drain).
    pub stop_consumers: AtomicBool,
    failure: Mutex<Option<Error>>,
    /// `None` until the run starts or is called off.
    gate: Mutex<Option<bool>>,
    gate_opened: Condvar,
}

impl Shared {
    /// Records the first failure and stops everything; later failures are
    /// usually consequences of the first and are dropped.
    pub fn fail(&self, error: Error) {
        let mut failure = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        failure.get_or_insert(error);
        self.stop_producers.store(true, Ordering::Relaxed);
        self.stop_consumers.store(true, Ordering::Relaxed);
        drop(failure);
        self.open_gate(false);
    }

    pub fn failed(&self) -> bool {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    pub fn take_failure(&self) -> Option<Error> {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    pub fn stopping_producers(&self) -> bool {
        self.stop_producers.load(Ordering::Relaxed)
    }

    pub fn stopping_consumers(&self) -> bool {
        self.stop_consumers.load(Ordering::Relaxed)
    }

    /// Starts the workers waiting in `wait_gate` (`go`), or sends them home.
    pub fn open_gate(&self, go: bool) {
        let mut gate = self.gate.lock().unwrap_or_else(|e| e.into_inner());
        gate.get_or_insert(go);
        self.gate_opened.notify_all();
    }

    /// Blocks until the gate opens; true to start, false if the run was
    /// called off before it began.
    pub fn wait_gate(&self) -> bool {
        let mut gate = self.gate.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(go) = *gate {
                return go;
            }
            gate = self
                .gate_opened
                .wait(gate)
                .unwrap_or_else(|e| e.into_inner());
        }
    }
}
