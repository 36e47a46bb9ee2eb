//! The decoders the server keeps between requests: one per episode id (bounded LRU,
//! `--max-episodes`) and one reusable decoder per decoder setting for requests without an
//! episode.
//!
//! The store has its own short-held lock, apart from the model's queue: `/reset` and `/info`
//! read and change it without waiting behind the actions in the queue. An action takes its
//! decoder out of the store while it runs and puts it back when it is done, so that:
//! - a `/reset` of that episode during the action is remembered, and the decoder is dropped
//!   instead of put back (the next action starts afresh, as the reset promised);
//! - a panic during the action loses that one decoder (it unwinds with the action), never
//!   another episode's.

use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;
use spec_vla::decode::Decoder;

use crate::episodes::Lru;

/// Decoders kept for requests without an episode, one per distinct decoder setting seen.
const STANDALONE_DECODERS: usize = 8;

/// One episode's decoder and how far it has come.
#[derive(Debug)]
pub struct EpisodeState {
    pub decoder: Box<dyn Decoder>,
    /// The settings the decoder was built from (`engine::settings_key`).
    pub settings: String,
    /// Actions served since the history started afresh.
    pub steps: u64,
}

/// Episode bookkeeping for `/info`.
#[derive(Debug, Clone, Serialize)]
pub struct EpisodeCounts {
    pub stored: usize,
    pub max: usize,
    pub evicted: u64,
}

/// The episode whose decoder an action has taken out.
#[derive(Debug)]
struct CheckedOut {
    id: String,
    /// `/reset` came for it while the action ran.
    reset: bool,
}

#[derive(Debug)]
pub struct DecoderStore {
    episodes: Lru<EpisodeState>,
    standalone: Lru<Box<dyn Decoder>>,
    checked_out: Option<CheckedOut>,
}

/// The store as the handlers share it.
pub type SharedStore = Arc<Mutex<DecoderStore>>;

/// Locks the store. Nothing that can panic runs under this lock (only map operations), but a
/// poisoned lock is taken over anyway rather than failing every later request.
pub fn lock(store: &SharedStore) -> MutexGuard<'_, DecoderStore> {
    store
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl DecoderStore {
    pub fn new(max_episodes: usize) -> SharedStore {
        Arc::new(Mutex::new(Self {
            episodes: Lru::new(max_episodes),
            standalone: Lru::new(STANDALONE_DECODERS),
            checked_out: None,
        }))
    }

    pub fn counts(&self) -> EpisodeCounts {
        EpisodeCounts {
            stored: self.episodes.len() + usize::from(self.checked_out.is_some()),
            max: self.episodes.capacity(),
            evicted: self.episodes.evicted(),
        }
    }

    /// Drops episode `id`'s state, also when an action is using it; whether there was any.
    pub fn reset(&mut self, id: &str) -> bool {
        let stored = self.episodes.remove(id).is_some();
        let running = match &mut self.checked_out {
            Some(out) if out.id == id => {
                out.reset = true;
                true
            }
            _ => false,
        };
        stored || running
    }

    /// Takes episode `id`'s state out for an action (dropping it first when `reset`): the state,
    /// if the store had one. The episode counts as running until [`put_back`](Self::put_back)
    /// or [`abandon`](Self::abandon).
    pub fn take_episode(&mut self, id: &str, reset: bool) -> Option<EpisodeState> {
        if reset {
            self.episodes.remove(id);
        }
        self.checked_out = Some(CheckedOut {
            id: id.to_string(),
            reset: false,
        });
        self.episodes.remove(id)
    }

    /// Ends the action on episode `id`: `state` goes back unless the episode was reset while it
    /// ran. Returns whether it went back.
    pub fn put_back(&mut self, id: &str, state: EpisodeState) -> bool {
        let reset = self
            .checked_out
            .take()
            .is_some_and(|out| out.id == id && out.reset);
        if !reset {
            self.episodes.insert(id.to_string(), state);
        }
        !reset
    }

    /// Ends an action whose episode state is lost (a failure that created it, or a panic).
    pub fn abandon(&mut self) {
        self.checked_out = None;
    }

    /// The reusable decoder of `settings`, taken out while a request without an episode runs.
    pub fn take_standalone(&mut self, settings: &str) -> Option<Box<dyn Decoder>> {
        self.standalone.remove(settings)
    }

    pub fn put_back_standalone(&mut self, settings: String, decoder: Box<dyn Decoder>) {
        self.standalone.insert(settings, decoder);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spec_vla::decode::GreedyDecoder;

    fn state(steps: u64) -> EpisodeState {
        EpisodeState {
            decoder: Box::new(GreedyDecoder),
            settings: "plain".into(),
            steps,
        }
    }

    #[test]
    fn a_reset_during_an_action_drops_the_state_it_puts_back() {
        let store = DecoderStore::new(4);
        let mut s = lock(&store);
        assert!(s.take_episode("a", false).is_none());
        assert_eq!(s.counts().stored, 1, "running counts as stored");
        assert!(s.put_back("a", state(1)));
        let taken = s.take_episode("a", false);
        assert_eq!(taken.as_ref().map(|t| t.steps), Some(1));
        assert!(s.reset("a"), "known while it runs");
        assert!(!s.put_back("a", state(2)), "reset meanwhile: dropped");
        assert_eq!(s.counts().stored, 0);
        // Another episode's reset does not touch the running one.
        s.put_back("b", state(5));
        s.take_episode("a", false);
        assert!(s.reset("b"));
        assert!(s.put_back("a", state(1)));
        assert_eq!(s.counts().stored, 1);
        s.take_episode("a", true);
        s.abandon();
        assert_eq!(s.counts().stored, 0);
    }
}
