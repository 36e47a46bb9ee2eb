//! The actions decoded so far in one episode, for drafters that extrapolate from them.

use std::collections::VecDeque;

/// What makes two actions part of one episode as far as drafting goes: the same instruction and
/// the same dataset statistics. (A new episode with the same instruction needs an explicit reset:
/// [`ActionHistory::clear`].) The default, empty strings, suits decoding frames one at a time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EpisodeKey {
    /// The task instruction.
    pub instruction: String,
    /// The dataset statistics' key.
    pub unnorm_key: String,
}

/// The last few actions' tokens of the current episode, oldest first.
#[derive(Debug, Clone, Default)]
pub struct ActionHistory {
    key: Option<EpisodeKey>,
    actions: VecDeque<Vec<u32>>,
    capacity: usize,
}

impl ActionHistory {
    /// A history that keeps the last `capacity` actions (0 keeps none). Room is reserved for
    /// at most [`MAX_DRAFTER_HISTORY`](crate::limits::MAX_DRAFTER_HISTORY) of them up front; a
    /// larger capacity grows as actions come.
    pub fn new(capacity: usize) -> Self {
        Self {
            key: None,
            actions: VecDeque::with_capacity(capacity.min(crate::limits::MAX_DRAFTER_HISTORY)),
            capacity,
        }
    }

    /// Forgets every action: the next one starts a new episode.
    pub fn clear(&mut self) {
        self.key = None;
        self.actions.clear();
    }

    /// Makes the history belong to `key`'s episode: actions of another instruction or other
    /// statistics are dropped, never offered to a drafter.
    pub fn enter(&mut self, key: &EpisodeKey) {
        if self.key.as_ref() != Some(key) {
            self.actions.clear();
            self.key = Some(key.clone());
        }
    }

    /// Records a decoded action (the oldest is dropped beyond the capacity).
    pub fn push(&mut self, tokens: &[u32]) {
        if self.capacity == 0 {
            return;
        }
        while self.actions.len() >= self.capacity {
            self.actions.pop_front();
        }
        self.actions.push_back(tokens.to_vec());
    }

    /// The most recent action, if any.
    pub fn last(&self) -> Option<&[u32]> {
        self.actions.back().map(Vec::as_slice)
    }

    /// The last `n` actions (fewer if fewer are known), oldest first.
    pub fn recent(&self, n: usize) -> impl Iterator<Item = &[u32]> {
        let skip = self.actions.len().saturating_sub(n);
        self.actions.iter().skip(skip).map(Vec::as_slice)
    }

    /// Actions held.
    pub fn len(&self) -> usize {
        self.actions.len()
    }

    /// Whether no action is held.
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(instruction: &str, unnorm_key: &str) -> EpisodeKey {
        EpisodeKey {
            instruction: instruction.into(),
            unnorm_key: unnorm_key.into(),
        }
    }

    #[test]
    fn keeps_the_last_actions_of_one_episode() {
        let mut h = ActionHistory::new(2);
        h.enter(&key("pick", "a"));
        h.push(&[1]);
        h.push(&[2]);
        h.push(&[3]);
        assert_eq!(h.recent(5).collect::<Vec<_>>(), vec![&[2][..], &[3][..]]);
        assert_eq!(h.last(), Some(&[3][..]));
        // The same episode again keeps it; another instruction or key drops it.
        h.enter(&key("pick", "a"));
        assert_eq!(h.len(), 2);
        h.enter(&key("pick", "b"));
        assert!(h.is_empty());
        h.push(&[4]);
        h.enter(&key("place", "b"));
        assert!(h.is_empty());
        h.push(&[5]);
        h.clear();
        assert!(h.is_empty() && h.last().is_none());
        let mut none = ActionHistory::new(0);
        none.push(&[1]);
        assert!(none.is_empty());
    }
}
