//! A set of input sequence numbers (0-based line indexes), as a bitmap: the
//! requests a journal already has a final state for. One bit per line keeps
//! a 10-million-line file's set at 1.25 MB.

/// A set of sequence numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeqSet {
    words: Vec<u64>,
    len: u64,
}

impl SeqSet {
    /// An empty set.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `seq`; returns whether it was new.
    pub fn insert(&mut self, seq: u64) -> bool {
        let (word, bit) = Self::place(seq);
        if self.words.len() <= word {
            self.words.resize(word + 1, 0);
        }
        let new = self.words[word] & (1 << bit) == 0;
        self.words[word] |= 1 << bit;
        self.len += u64::from(new);
        new
    }

    /// Whether `seq` is in the set.
    #[must_use]
    pub fn contains(&self, seq: u64) -> bool {
        let (word, bit) = Self::place(seq);
        self.words.get(word).is_some_and(|w| w & (1 << bit) != 0)
    }

    /// How many sequence numbers the set holds.
    #[must_use]
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the set is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn place(seq: u64) -> (usize, u64) {
        // A word index past usize::MAX cannot have been inserted (the Vec
        // could not hold it), so saturating keeps `contains` false.
        (usize::try_from(seq / 64).unwrap_or(usize::MAX), seq % 64)
    }
}

impl FromIterator<u64> for SeqSet {
    fn from_iter<I: IntoIterator<Item = u64>>(iter: I) -> Self {
        let mut set = Self::new();
        for seq in iter {
            set.insert(seq);
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use super::SeqSet;

    #[test]
    fn holds_what_was_inserted_and_nothing_else() {
        let set: SeqSet = [0, 3, 63, 64, 1000, 3].into_iter().collect();
        assert_eq!(set.len(), 5);
        for seq in [0, 3, 63, 64, 1000] {
            assert!(set.contains(seq), "{seq}");
        }
        for seq in [1, 2, 62, 65, 999, 1001, 1 << 40, u64::MAX] {
            assert!(!set.contains(seq), "{seq}");
        }
        assert!(SeqSet::new().is_empty());
    }
}
