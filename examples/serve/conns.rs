//! The open connections and whether each is in a request, so that at `--max-connections` the
//! oldest idle one (waiting for a request head, sent slowly or not at all) is closed to make room
//! for a new one: a flood of idle sockets cannot keep a robot's next request, or `/health`, out
//! for a whole header timeout.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

#[derive(Debug, Default)]
pub struct Registry {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    next: u64,
    /// By id, so oldest first.
    open: BTreeMap<u64, Entry>,
}

#[derive(Debug)]
struct Entry {
    requests: Arc<AtomicUsize>,
    evict: Arc<Notify>,
}

/// One connection's place in the registry, removed when dropped.
#[derive(Debug)]
pub struct Handle {
    id: u64,
    registry: Arc<Registry>,
    /// Requests of the connection being answered now.
    pub requests: Arc<AtomicUsize>,
    /// Notified when the connection should close.
    pub evict: Arc<Notify>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.registry.lock().open.remove(&self.id);
    }
}

/// Counts a request of a connection as in progress until dropped.
#[derive(Debug)]
pub struct InRequest(Arc<AtomicUsize>);

impl InRequest {
    pub fn new(requests: &Arc<AtomicUsize>) -> Self {
        requests.fetch_add(1, Ordering::SeqCst);
        Self(requests.clone())
    }
}

impl Drop for InRequest {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn register(self: &Arc<Self>) -> Handle {
        let requests = Arc::new(AtomicUsize::new(0));
        let evict = Arc::new(Notify::new());
        let mut inner = self.lock();
        let id = inner.next;
        inner.next += 1;
        let entry = Entry {
            requests: requests.clone(),
            evict: evict.clone(),
        };
        inner.open.insert(id, entry);
        Handle {
            id,
            registry: self.clone(),
            requests,
            evict,
        }
    }

    /// Tells the oldest connection with no request in progress to close; whether there was one.
    pub fn evict_oldest_idle(&self) -> bool {
        let mut inner = self.lock();
        let idle = inner
            .open
            .iter()
            .find(|(_, e)| e.requests.load(Ordering::SeqCst) == 0)
            .map(|(&id, _)| id);
        match idle.and_then(|id| inner.open.remove(&id)) {
            Some(entry) => {
                entry.evict.notify_one();
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_the_oldest_connection_not_in_a_request() {
        let registry = Arc::new(Registry::default());
        let a = registry.register();
        let b = registry.register();
        let c = registry.register();
        let busy = InRequest::new(&a.requests);
        assert!(registry.evict_oldest_idle(), "b is idle");
        assert_eq!(
            registry.lock().open.keys().copied().collect::<Vec<_>>(),
            [0, 2]
        );
        drop(b);
        drop(c);
        assert!(!registry.evict_oldest_idle(), "a is in a request");
        drop(busy);
        assert!(registry.evict_oldest_idle());
        drop(a);
        assert!(registry.lock().open.is_empty());
    }
}
